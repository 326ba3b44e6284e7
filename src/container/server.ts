import { existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { hostCgroupMounts } from "./cgroups.js";
import { type Request, requestContext } from "./request.js";

/**
 * The runtime server: one long-lived Node process that answers the `vessel-runc` launcher
 * (native/nsexec/launcher.c), so that a runtime call costs a socket round trip instead of a Node
 * start-up (podman makes several calls per container). The launcher sends its working
 * directory and arguments; the server runs the call with the function it is given (the runtime's
 * command line, src/cli/runtime.ts, passed in by the entry src/cli/runtime_server_main.ts: the
 * library does not know the command line) with the call's output captured, and answers "stdout LEN", "stderr LEN" blocks and "exit N". When the
 * call needs the helper, the server says "exec-helper" and the launcher execs vessel-nsexec on
 * the same connection: the container's init is then the launcher's child, as with runc.
 *
 * Started by the launcher on demand (detached, in the root cgroups so that it pins no
 * container's cgroup), listening on a root-only socket; exits after IDLE_MS without calls, or
 * after the call in progress when its own code was rebuilt.
 */
/**
 * The socket of a checkout's server: /run/vessel-runc-<FNV-1a of the server entry's path>.sock,
 * computed the same way by the launcher, so that two checkouts on one host stay apart.
 */
export function serverSocketPath(script: string): string {
  let h = 2166136261;
  for (const byte of Buffer.from(script)) h = Math.imul(h ^ byte, 16777619) >>> 0;
  return `/run/vessel-runc-${h.toString(16).padStart(8, "0")}.sock`;
}
const IDLE_MS = 120_000;
const VERSION = 1;

/** Request: u32 length, u32 count, then count x (u32 length, bytes): version, cwd, argv... */
function parseRequest(b: Buffer): string[] | undefined {
  if (b.length < 4) return undefined;
  const total = b.readUInt32LE(0);
  if (b.length < 4 + total) return undefined;
  const n = b.readUInt32LE(4);
  const out: string[] = [];
  let off = 8;
  for (let i = 0; i < n; i++) {
    const len = b.readUInt32LE(off);
    out.push(b.subarray(off + 4, off + 4 + len).toString());
    off += 4 + len;
  }
  return out;
}

function reply(sock: Socket, req: Request, code: number): void {
  if (sock.destroyed) return;
  const out = Buffer.concat(req.stdout);
  const err = Buffer.concat(req.stderr);
  const parts: Buffer[] = [];
  if (out.length) parts.push(Buffer.from(`stdout ${out.length}\n`), out);
  if (err.length) parts.push(Buffer.from(`stderr ${err.length}\n`), err);
  parts.push(Buffer.from(`exit ${code}\n`));
  sock.end(Buffer.concat(parts));
}

/** Leaves whatever cgroup the first caller was in, so that the server never keeps one busy. */
function moveToRootCgroups(): void {
  try {
    for (const m of hostCgroupMounts()) {
      try {
        writeFileSync(`${m.mountpoint}/cgroup.procs`, String(process.pid));
      } catch {
        // a hierarchy we may not join: harmless
      }
    }
  } catch {
    // no cgroups mounted
  }
}

/** Runs one call of the runtime's command line and resolves to its exit status. */
export type RuntimeCall = (argv: string[]) => Promise<number>;

/**
 * Serves runtime calls on `socketPath` until idle. `codeFile` is a file the build rewrites (tsc's
 * build info): a newer one means this server runs stale code, and it exits after the call.
 */
export async function serve(run: RuntimeCall, socketPath: string, codeFile: string): Promise<void> {
  const builtAt = statSync(codeFile).mtimeMs;
  moveToRootCgroups();
  process.umask(0o077);
  // another server may be running: then leave it be
  if (existsSync(socketPath)) {
    const alive = await new Promise<boolean>((res) => {
      const c = createConnection(socketPath);
      c.on("connect", () => {
        c.destroy();
        res(true);
      });
      c.on("error", () => res(false));
    });
    if (alive) return;
    try {
      unlinkSync(socketPath);
    } catch {
      // raced with another server
    }
  }
  let active = 0;
  let idle: NodeJS.Timeout | undefined;
  const server = createServer((sock) => {
    active++;
    if (idle) clearTimeout(idle);
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const fields = parseRequest(buf);
      if (!fields) return;
      sock.off("data", onData);
      const [version, cwd, ...argv] = fields;
      const req: Request = { cwd: cwd ?? "/", socket: sock, stdout: [], stderr: [], helperStarted: false };
      if (Number(version) !== VERSION) {
        req.stderr.push(
          Buffer.from(
            `vessel-runc: launcher protocol ${version}, server ${VERSION}: rebuild (npm run build)\n`,
          ),
        );
        reply(sock, req, 1);
        return;
      }
      requestContext
        .run(req, () => run(argv))
        .then(
          (code) => reply(sock, req, code),
          (err) => {
            req.stderr.push(Buffer.from(`vessel-runc: ${(err as Error).message}\n`));
            reply(sock, req, 1);
          },
        );
    };
    sock.on("data", onData);
    sock.on("error", () => {});
    sock.on("close", () => {
      active--;
      let rebuilt = false;
      try {
        rebuilt = statSync(codeFile).mtimeMs !== builtAt;
      } catch {
        rebuilt = true;
      }
      if (rebuilt && active === 0) shutdown();
      else if (active === 0) idle = setTimeout(shutdown, IDLE_MS);
    });
  });
  const shutdown = () => {
    server.close();
    try {
      if (readFileSync(`/proc/${process.pid}/stat`) && existsSync(socketPath)) unlinkSync(socketPath);
    } catch {
      // gone already
    }
    process.exit(0);
  };
  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(socketPath, () => res());
  });
  idle = setTimeout(shutdown, IDLE_MS);
}
