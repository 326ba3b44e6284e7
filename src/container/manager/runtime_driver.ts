import { type ChildProcess, type StdioOptions, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ManagerError } from "./errors.js";

/**
 * How the manager drives an OCI runtime. The manager needs runc's foreground `run` contract: a
 * child process that creates and starts the container, holds its stdio, forwards signals and
 * exits with the container's status (128+signal when a signal killed it), plus kill, exec, delete
 * and state.
 *
 * `OciCliDriver` speaks runc's command line, so any runc-compatible runtime fits: Debian's runc
 * (the default until Vessel's own runtime can run containers on this host) or Vessel's
 * `vessel-runc` (`VESSEL_OCI_RUNTIME=vessel-runc`, or a path).
 */

export interface ExecOptions {
  tty: boolean;
  interactive: boolean;
  env: string[];
  user?: string;
  cwd?: string;
}

export interface RuntimeDriver {
  readonly name: string;
  /** `logFile` receives the runtime's own messages (JSON lines), apart from the container's output. */
  run(id: string, bundle: string, pidFile: string, stdio: StdioOptions, logFile?: string): ChildProcess;
  exec(id: string, args: string[], opts: ExecOptions, stdio: StdioOptions): ChildProcess;
  kill(id: string, signal: string, all?: boolean): boolean;
  delete(id: string): void;
  state(id: string): { status: string; pid: number } | undefined;
}

export class OciCliDriver implements RuntimeDriver {
  readonly name: string;

  constructor(
    private readonly argv0: string[],
    private readonly root: string,
  ) {
    this.name = argv0.join(" ");
  }

  private args(...rest: string[]): string[] {
    return [...this.argv0.slice(1), "--root", this.root, ...rest];
  }

  run(id: string, bundle: string, pidFile: string, stdio: StdioOptions, logFile?: string): ChildProcess {
    const log = logFile ? ["--log", logFile, "--log-format", "json"] : [];
    return spawn(
      this.argv0[0]!,
      [
        ...this.argv0.slice(1),
        ...log,
        "--root",
        this.root,
        "run",
        "--bundle",
        bundle,
        "--pid-file",
        pidFile,
        id,
      ],
      {
        stdio,
      },
    );
  }

  exec(id: string, args: string[], opts: ExecOptions, stdio: StdioOptions): ChildProcess {
    const flags: string[] = [];
    if (opts.tty) flags.push("--tty");
    for (const e of opts.env) flags.push("--env", e);
    if (opts.user) flags.push("--user", opts.user);
    if (opts.cwd) flags.push("--cwd", opts.cwd);
    return spawn(this.argv0[0]!, this.args("exec", ...flags, id, ...args), { stdio });
  }

  kill(id: string, signal: string, all = false): boolean {
    const r = spawnSync(this.argv0[0]!, this.args("kill", ...(all ? ["--all"] : []), id, signal), {
      encoding: "utf8",
    });
    return r.status === 0;
  }

  delete(id: string): void {
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

function which(name: string): string | undefined {
  for (const dir of (
    process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  ).split(":")) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  for (const dir of ["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    if (existsSync(join(dir, name))) return join(dir, name);
  return undefined;
}

/** The runtime the manager uses: `VESSEL_OCI_RUNTIME` (runc, crun, vessel-runc or a path), else runc. */
export function defaultDriver(vesselRoot: string): RuntimeDriver {
  const want = process.env.VESSEL_OCI_RUNTIME ?? "runc";
  let argv0: string[];
  if (want === "vessel-runc") {
    const bin = new URL("../../../../bin/vessel-runc.js", import.meta.url).pathname;
    if (!existsSync(bin))
      throw new ManagerError("START_FAILED", `VESSEL_OCI_RUNTIME=vessel-runc but ${bin} is missing`);
    argv0 = [process.execPath, bin];
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
