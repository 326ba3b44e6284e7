import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { appendFileSync, closeSync, existsSync, constants as fsConstants, openSync, rmSync } from "node:fs";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { ConsoleSocket, callerWindowSize, proxyConsole } from "./console.js";
import { DEFAULT_CAPS } from "./oci_config.js";
import { ManagerError } from "./errors.js";

/**
 * How the manager drives an OCI runtime. It needs runc's foreground `run` contract: create and
 * start the container, wait for it, and end with its status (128+signal when a signal killed it);
 * plus kill, exec, delete and state.
 *
 * - `LibraryDriver` calls Vessel's own runtime (src/container/runtime.ts, `Runtime`) in this
 *   process: no runtime subprocess, only the runtime's nsexec helper. The container inherits
 *   this process's stdio (the runtime's helper hands it fds 0-2), or with `pipe` the write ends
 *   of FIFOs this process reads (the runtime's `stdio` option), which builds use to show a
 *   step's output; the detached monitor's own fds 1 and 2 are FIFOs it reads.
 *   An attached -t run gets a pty of its own: the runtime sends its master to a console socket
 *   and this process proxies it to its terminal (console.ts), as runc's foreground run does.
 * - `OciCliDriver` speaks runc's command line, so any runc-compatible runtime fits: Debian's runc
 *   or crun, or Vessel's own `vessel-runc`, for containers and build steps alike.
 * The default is the library when its helper is built; `VESSEL_OCI_RUNTIME=runc|crun|vessel-runc|PATH`
 * picks a CLI runtime.
 */

export interface ExecRequest {
  args: string[];
  env: string[];
  /** uid[:gid] */
  user?: { uid: number; gid: number };
  cwd: string;
  tty: boolean;
  /** With `tty`: send this process's stdin to the process's pty (-i); without, it reads nothing. */
  stdin?: boolean;
}

export interface RunHandle {
  /** Resolves with the container's exit status; never rejects (a failed start is 125-127). */
  exit: Promise<number>;
  stdout: Readable | null;
  stderr: Readable | null;
}

export interface RunOptions {
  pidFile: string;
  logFile: string;
  /** "pipe": stdout and stderr as streams; "inherit": this process's fds 1 and 2. */
  stdio: "inherit" | "pipe";
  /** Give the container this process's stdin (-i); otherwise it reads nothing. */
  stdin?: boolean;
  /**
   * -t attached: the process has a terminal (process.terminal in the bundle). The library runtime
   * then gives it a new pty whose master this process proxies to its own stdio; a CLI runtime
   * (runc's foreground run) does that itself.
   */
  tty?: boolean;
  /**
   * With `tty`, for a detached container's monitor: receives the pty master (and keeps it)
   * instead of proxying it to this process's stdio; resolves when the container's side closes.
   */
  console?: (master: number) => Promise<void>;
}

export interface RuntimeDriver {
  readonly name: string;
  /** Whether run() with `pipe` gives the container's output as streams. */
  readonly canPipe: boolean;
  /** Whether a bundle with process.terminal gets a pty of its own in a foreground run. */
  readonly allocatesTerminal: boolean;
  /** Whether run() can hand a detached container's pty master to its monitor (`console`). */
  readonly holdsTerminal: boolean;
  /** `logFile` receives the runtime's own messages (JSON lines), apart from the container's output. */
  run(id: string, bundle: string, opts: RunOptions): RunHandle;
  /** Runs a process in a running container with this process's stdio; resolves with its status. */
  exec(id: string, req: ExecRequest): Promise<number>;
  kill(id: string, signal: string, all?: boolean): boolean;
  delete(id: string): Promise<void>;
  state(id: string): { status: string; pid: number } | undefined;
}

/**
 * Waits for `p`, but no longer than `ms`; the timer is cleared when `p` settles first (a pending
 * timer would keep this process alive that long after the container is done).
 */
async function atMost(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function childExit(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.on("close", (code, signal) => resolve(code ?? (signal ? 128 + signalNumber(signal) : 255)));
    child.on("error", () => resolve(127));
  });
}

function signalNumber(name: string): number {
  const table: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
  return table[name] ?? 0;
}

export class OciCliDriver implements RuntimeDriver {
  readonly name: string;
  readonly canPipe = true;
  readonly allocatesTerminal = true;
  // runc's foreground run proxies its pty to its own stdio; a console socket is for --detach only
  readonly holdsTerminal = false;

  constructor(
    private readonly argv0: string[],
    private readonly root: string,
  ) {
    this.name = argv0.at(-1)!.split("/").at(-1)!;
  }

  private args(...rest: string[]): string[] {
    return [...this.argv0.slice(1), "--root", this.root, ...rest];
  }

  run(id: string, bundle: string, opts: RunOptions): RunHandle {
    const child = spawn(
      this.argv0[0]!,
      [
        ...this.argv0.slice(1),
        "--log",
        opts.logFile,
        "--log-format",
        "json",
        "--root",
        this.root,
        "run",
        "--bundle",
        bundle,
        "--pid-file",
        opts.pidFile,
        id,
      ],
      { stdio: opts.stdio === "pipe" ? [opts.stdin ? "inherit" : "ignore", "pipe", "pipe"] : "inherit" },
    );
    return { exit: childExit(child), stdout: child.stdout, stderr: child.stderr };
  }

  exec(id: string, req: ExecRequest): Promise<number> {
    const flags: string[] = [];
    if (req.tty) flags.push("--tty");
    for (const e of req.env) flags.push("--env", e);
    if (req.user) flags.push("--user", `${req.user.uid}:${req.user.gid}`);
    flags.push("--cwd", req.cwd);
    return childExit(
      spawn(this.argv0[0]!, this.args("exec", ...flags, id, ...req.args), { stdio: "inherit" }),
    );
  }

  kill(id: string, signal: string, all = false): boolean {
    const r = spawnSync(this.argv0[0]!, this.args("kill", ...(all ? ["--all"] : []), id, signal), {
      encoding: "utf8",
    });
    return r.status === 0;
  }

  async delete(id: string): Promise<void> {
    spawnSync(this.argv0[0]!, this.args("delete", "--force", id), { encoding: "utf8" });
  }

  state(id: string): { status: string; pid: number } | undefined {
    const r = spawnSync(this.argv0[0]!, this.args("state", id), { encoding: "utf8" });
    if (r.status !== 0) return undefined;
    try {
      const s = JSON.parse(r.stdout) as { status: string; pid: number };
      return { status: s.status, pid: s.pid };
    } catch {
      return undefined;
    }
  }
}

type RuntimeModule = typeof import("../runtime.js");
type LogModule = typeof import("../log.js");

/** Vessel's own runtime, called as a library in this process. */
export class LibraryDriver implements RuntimeDriver {
  readonly name = "vessel (library)";
  readonly canPipe = true;
  readonly allocatesTerminal = true;
  readonly holdsTerminal = true;

  constructor(
    private readonly mod: RuntimeModule,
    private readonly logMod: LogModule,
    private readonly root: string,
  ) {}

  private runtime(logFile?: string) {
    return new this.mod.Runtime({ root: this.root, log: new this.logMod.RuntimeLog(logFile, "json") });
  }

  run(id: string, bundle: string, opts: RunOptions): RunHandle {
    if (opts.stdio === "pipe") return this.runPiped(id, bundle, opts);
    const consoleSock = opts.tty
      ? ConsoleSocket.listen(join(tmpdir(), `vessel-console-${id.slice(0, 12)}-${process.pid}.sock`))
      : undefined;
    const ran = this.runtime(opts.logFile)
      .run(id, { bundle, pidFile: opts.pidFile, ...(consoleSock ? { consoleSocket: consoleSock.path } : {}) })
      .catch((err: Error) => {
        appendFileSync(
          opts.logFile,
          `${JSON.stringify({ level: "error", msg: err.message, time: new Date().toISOString() })}\n`,
        );
        return /executable file not found|no such file/i.test(err.message) ? 127 : 125;
      });
    if (consoleSock === undefined) return { exit: ran, stdout: null, stderr: null };
    const exit = (async () => {
      const master = await consoleSock.receive(ran);
      const copied =
        master === undefined
          ? undefined
          : opts.console
            ? opts.console(master)
            : proxyConsole(master, { input: opts.stdin ?? false });
      const code = await ran;
      // the last output is still in the pty; its copy ends when the container's side closes
      if (copied) await atMost(copied, 2000);
      return code;
    })();
    return { exit, stdout: null, stderr: null };
  }

  /**
   * The container's fds 1 and 2 are the write ends of two FIFOs next to the pid file, whose read
   * ends this process reads as streams; fd 0 is this process's (opts.stdin) or /dev/null.
   */
  private runPiped(id: string, bundle: string, opts: RunOptions): RunHandle {
    const dir = dirname(opts.pidFile);
    const readers: Socket[] = [];
    const fds: number[] = [opts.stdin ? 0 : openSync("/dev/null", "r")];
    for (const name of ["stdout.pipe", "stderr.pipe"]) {
      const path = join(dir, name);
      rmSync(path, { force: true });
      const r = spawnSync("mkfifo", ["-m", "600", path], { encoding: "utf8" });
      if (r.status !== 0)
        throw new ManagerError("START_FAILED", `mkfifo ${path} failed: ${r.error?.message ?? r.stderr}`);
      const readFd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
      fds.push(openSync(path, fsConstants.O_WRONLY));
      rmSync(path, { force: true });
      readers.push(new Socket({ fd: readFd, readable: true, writable: false }));
    }
    const ours = opts.stdin ? fds.slice(1) : fds;
    const ran = this.runtime(opts.logFile)
      .run(id, { bundle, pidFile: opts.pidFile, stdio: [fds[0]!, fds[1]!, fds[2]!] })
      .catch((err: Error) => {
        appendFileSync(
          opts.logFile,
          `${JSON.stringify({ level: "error", msg: err.message, time: new Date().toISOString() })}\n`,
        );
        return /executable file not found|no such file/i.test(err.message) ? 127 : 125;
      });
    const exit = (async () => {
      const code = await ran;
      // our write ends were the last ones: closing them ends the streams after their last bytes
      for (const fd of ours) closeSync(fd);
      const ended = readers.map(
        (s) => new Promise<void>((r) => (s.readableEnded || s.destroyed ? r() : s.once("close", () => r()))),
      );
      await atMost(Promise.all(ended), 2000);
      for (const s of readers) s.destroy();
      return code;
    })();
    for (const s of readers) s.on("error", () => undefined);
    return { exit, stdout: readers[0]!, stderr: readers[1]! };
  }

  /**
   * Without -t the process shares this process's stdio. With -t it gets a pty of its own, sized
   * from this terminal: the runtime sends its master to a console socket, proxied here as for
   * `run -t` (console.ts), stdin included with -i.
   */
  async exec(id: string, req: ExecRequest): Promise<number> {
    const size = req.tty ? callerWindowSize() : undefined;
    const proc = {
      terminal: req.tty,
      ...(size ? { consoleSize: size } : {}),
      user: req.user ?? { uid: 0, gid: 0 },
      args: req.args,
      env: req.env,
      cwd: req.cwd,
      capabilities: { bounding: DEFAULT_CAPS, effective: DEFAULT_CAPS, permitted: DEFAULT_CAPS },
    };
    if (!req.tty) return this.runtime().exec(id, proc);
    const consoleSock = ConsoleSocket.listen(
      join(tmpdir(), `vessel-exec-${id.slice(0, 12)}-${process.pid}-${Date.now() % 100000}.sock`),
    );
    const ran = this.runtime().exec(id, proc, { consoleSocket: consoleSock.path });
    const master = await consoleSock.receive(ran);
    const copied = master !== undefined ? proxyConsole(master, { input: req.stdin ?? false }) : undefined;
    try {
      return await ran;
    } finally {
      // the last output is still in the pty; its copy ends when the process's side closes
      if (copied) await atMost(copied, 2000);
    }
  }

  kill(id: string, signal: string, all = false): boolean {
    try {
      this.runtime().kill(id, signal, { all });
      return true;
    } catch {
      return false;
    }
  }

  async delete(id: string): Promise<void> {
    try {
      await this.runtime().delete(id, { force: true });
    } catch {
      // not there: nothing to delete
    }
  }

  state(id: string): { status: string; pid: number } | undefined {
    try {
      const s = this.runtime().state(id);
      return { status: s.status, pid: s.pid ?? 0 };
    } catch {
      return undefined;
    }
  }
}

function which(name: string): string | undefined {
  const dirs = [
    ...(process.env.PATH ?? "").split(":"),
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
  ];
  for (const dir of dirs) {
    if (dir === "") continue;
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

const VESSEL_RUNC = fileURLToPath(new URL("../../../../bin/vessel-runc.js", import.meta.url));
const HELPER = fileURLToPath(new URL("../../../../native/build/vessel-nsexec", import.meta.url));

/** A runc-compatible command line runtime: runc, crun, vessel-runc or a path. */
export function cliDriver(vesselRoot: string, want: string): RuntimeDriver {
  let argv0: string[];
  if (want === "vessel-runc") {
    if (!existsSync(VESSEL_RUNC))
      throw new ManagerError(
        "START_FAILED",
        `vessel-runc is missing (${VESSEL_RUNC}): run Vessel from a complete checkout, or set VESSEL_OCI_RUNTIME=runc`,
      );
    argv0 = [process.execPath, VESSEL_RUNC];
  } else {
    const path = want.includes("/") ? want : which(want);
    if (path === undefined || !existsSync(path)) {
      throw new ManagerError(
        "START_FAILED",
        `OCI runtime "${want}" not found (install runc, or set VESSEL_OCI_RUNTIME)`,
        {
          runtime: want,
        },
      );
    }
    argv0 = [path];
  }
  return new OciCliDriver(argv0, join(vesselRoot, "runtime", want.replace(/[^\w.-]/g, "_")));
}

/** The runtime for containers: VESSEL_OCI_RUNTIME, else Vessel's runtime library, else runc. */
export async function defaultDriver(vesselRoot: string): Promise<RuntimeDriver> {
  const want = process.env.VESSEL_OCI_RUNTIME;
  if (want !== undefined && want !== "" && want !== "vessel") return cliDriver(vesselRoot, want);
  if (existsSync(process.env.VESSEL_NSEXEC ?? HELPER)) {
    const [mod, logMod] = await Promise.all([import("../runtime.js"), import("../log.js")]);
    return new LibraryDriver(mod, logMod, join(vesselRoot, "runtime", "vessel"));
  }
  if (want === "vessel")
    throw new ManagerError(
      "START_FAILED",
      `Vessel's runtime helper ${HELPER} is not built: run npm run build`,
    );
  return cliDriver(vesselRoot, "runc");
}

/**
 * The runtime for build steps, which need the step's output as pipes: the same as for containers
 * (the library gives pipes too).
 */
export function buildDriver(vesselRoot: string): Promise<RuntimeDriver> {
  return defaultDriver(vesselRoot);
}
