import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ContainerError } from "../container/errors.js";
import { type LogFormat, RuntimeLog, writeStdout } from "../container/log.js";
import { callerPath } from "../container/request.js";
import { Runtime } from "../container/runtime.js";
import type { Process, Resources } from "../container/spec.js";
import { describeError, UsageError } from "../errors.js";

/**
 * `vessel-runc` (also `vessel runtime`): runc's command line over the container runtime library.
 * Flags are accepted in runc's spellings (`--flag value`, `--flag=value`, `-flag`), global ones
 * before the command. This file only parses and prints; the work is in src/container/runtime.ts.
 */

export type FlagKind = "bool" | "string" | "multi";
export interface FlagSpec {
  [name: string]: FlagKind;
}
export type Parsed = { flags: Record<string, string | boolean | string[]>; args: string[] };

const ALIASES: Record<string, string> = {
  b: "bundle",
  d: "detach",
  t: "tty",
  f: "force",
  a: "all",
  p: "process",
  e: "env",
  u: "user",
  r: "resources",
  q: "quiet",
  c: "cap",
  g: "additional-gids",
  h: "help",
  v: "version",
};

export function parseFlags(argv: string[], spec: FlagSpec, stopAtPositional: boolean): Parsed {
  const flags: Parsed["flags"] = {};
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith("-") || a === "-") {
      if (stopAtPositional) {
        args.push(...argv.slice(i));
        break;
      }
      args.push(a);
      continue;
    }
    let name = a.replace(/^--?/, "");
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    name = ALIASES[name] ?? name;
    const kind = spec[name];
    if (kind === undefined) throw new UsageError("bad_flag", `flag provided but not defined: -${name}`);
    if (kind === "bool") {
      flags[name] = value === undefined ? true : value !== "false";
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError("bad_flag", `flag needs an argument: -${name}`);
    }
    if (kind === "multi") ((flags[name] as string[] | undefined) ?? (flags[name] = [])).push(value);
    else flags[name] = value;
  }
  return { flags, args };
}

const str = (p: Parsed, n: string): string | undefined => {
  const v = p.flags[n];
  return typeof v === "string" ? v : undefined;
};
const bool = (p: Parsed, n: string): boolean => p.flags[n] === true;
const multi = (p: Parsed, n: string): string[] => (Array.isArray(p.flags[n]) ? (p.flags[n] as string[]) : []);
const int = (p: Parsed, n: string): number | undefined => {
  const v = str(p, n);
  if (v === undefined) return undefined;
  const x = Number(v);
  if (!Number.isInteger(x)) throw new UsageError("bad_flag", `--${n} needs an integer, got "${v}"`);
  return x;
};

/** "512m", "1g", "1048576" -> bytes; "-1" stays -1 (unlimited). */
function bytes(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const m = /^(-?\d+)([kmgt]?)b?$/i.exec(v.trim());
  if (!m) throw new UsageError("bad_flag", `--${flag}: "${v}" is not a size (e.g. 512m)`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[
    m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"
  ];
  return Number(m[1]) * mult;
}

const GLOBAL: FlagSpec = {
  root: "string",
  log: "string",
  "log-format": "string",
  debug: "bool",
  "systemd-cgroup": "bool",
  rootless: "string",
  criu: "string",
  help: "bool",
  version: "bool",
};

const COMMANDS: Record<string, { flags: FlagSpec; summary: string; stop?: boolean }> = {
  create: {
    summary: "create a container (its process waits for `start`)",
    flags: {
      bundle: "string",
      "pid-file": "string",
      "console-socket": "string",
      "preserve-fds": "string",
      "no-pivot": "bool",
      "no-new-keyring": "bool",
      "pidfd-socket": "string",
    },
  },
  run: {
    summary: "create and start a container; wait for it unless --detach",
    flags: {
      bundle: "string",
      "pid-file": "string",
      "console-socket": "string",
      "preserve-fds": "string",
      "no-pivot": "bool",
      "no-new-keyring": "bool",
      detach: "bool",
      keep: "bool",
    },
  },
  start: { summary: "start a created container", flags: {} },
  state: { summary: "print the state of a container as JSON", flags: {} },
  kill: { summary: "send a signal (default SIGTERM) to the container", flags: { all: "bool" } },
  delete: { summary: "delete a stopped container (--force: kill it first)", flags: { force: "bool" } },
  list: { summary: "list containers", flags: { format: "string", quiet: "bool" } },
  ps: { summary: "list the processes of a container", flags: { format: "string" } },
  exec: {
    summary: "run another process in a container",
    stop: true,
    flags: {
      process: "string",
      "console-socket": "string",
      "pid-file": "string",
      detach: "bool",
      tty: "bool",
      cwd: "string",
      env: "multi",
      user: "string",
      "additional-gids": "multi",
      cap: "multi",
      "no-new-privs": "bool",
      "preserve-fds": "string",
      "process-label": "string",
      apparmor: "string",
      cgroup: "string",
      "ignore-paused": "bool",
      "pidfd-socket": "string",
    },
  },
  pause: { summary: "freeze every process of the container", flags: {} },
  resume: { summary: "thaw a paused container", flags: {} },
  update: {
    summary: "change the resource limits of a running container",
    flags: {
      resources: "string",
      memory: "string",
      "memory-swap": "string",
      "memory-reservation": "string",
      "kernel-memory": "string",
      "cpu-shares": "string",
      "cpu-quota": "string",
      "cpu-period": "string",
      "cpu-rt-period": "string",
      "cpu-rt-runtime": "string",
      "cpuset-cpus": "string",
      "cpuset-mems": "string",
      "pids-limit": "string",
      "blkio-weight": "string",
    },
  },
  spec: {
    summary: "write a starting config.json into the bundle",
    flags: { bundle: "string", rootless: "bool" },
  },
  features: { summary: "print what this runtime supports, as JSON", flags: {} },
};

function usage(): string {
  const cmds = Object.entries(COMMANDS)
    .map(([n, c]) => `  ${n.padEnd(9)} ${c.summary}`)
    .join("\n");
  return `usage: vessel-runc [global options] <command> [options] <container-id>

Vessel's OCI runtime, with runc's command line.

global options:
  --root DIR          state directory (default /run/vessel-runc)
  --log FILE          log file (default: stderr)
  --log-format FMT    text or json
  --debug             debug messages in the log
  --systemd-cgroup    cgroupsPath is "slice:prefix:name"; turned into the cgroupfs path systemd
                      would use (no systemd is contacted)

commands:
${cmds}
`;
}

function needId(p: Parsed, cmd: string): string {
  const id = p.args[0];
  if (!id) throw new UsageError("no_id", `"${cmd}" requires a container id`);
  return id;
}

function resourcesFromFlags(p: Parsed): Resources {
  if (str(p, "resources") !== undefined) {
    const src = str(p, "resources")!;
    const text = src === "-" ? readFileSync(0, "utf8") : readFileSync(callerPath(src), "utf8");
    return JSON.parse(text) as Resources;
  }
  const r: Resources = {};
  const mem = {
    limit: bytes(str(p, "memory"), "memory"),
    swap: bytes(str(p, "memory-swap"), "memory-swap"),
    reservation: bytes(str(p, "memory-reservation"), "memory-reservation"),
  };
  if (Object.values(mem).some((v) => v !== undefined))
    r.memory = Object.fromEntries(Object.entries(mem).filter(([, v]) => v !== undefined)) as NonNullable<
      Resources["memory"]
    >;
  const cpu: NonNullable<Resources["cpu"]> = {};
  const shares = int(p, "cpu-shares");
  if (shares !== undefined) cpu.shares = shares;
  const quota = int(p, "cpu-quota");
  if (quota !== undefined) cpu.quota = quota;
  const period = int(p, "cpu-period");
  if (period !== undefined) cpu.period = period;
  const cpus = str(p, "cpuset-cpus");
  if (cpus !== undefined) cpu.cpus = cpus;
  const mems = str(p, "cpuset-mems");
  if (mems !== undefined) cpu.mems = mems;
  if (Object.keys(cpu).length) r.cpu = cpu;
  const pids = int(p, "pids-limit");
  if (pids !== undefined) r.pids = { limit: pids };
  const bw = int(p, "blkio-weight");
  if (bw !== undefined) r.blockIO = { weight: bw };
  return r;
}

function execProcess(rt: Runtime, id: string, p: Parsed): Process {
  const file = str(p, "process");
  if (file) return JSON.parse(readFileSync(callerPath(file), "utf8")) as Process;
  const cmd = p.args.slice(1);
  if (cmd.length === 0) throw new UsageError("no_command", "exec needs a command, or --process FILE");
  const base = rt.savedSpec(id).process;
  const user = str(p, "user");
  const [uid, gid] = user ? user.split(":").map(Number) : [base?.user.uid ?? 0, base?.user.gid ?? 0];
  const proc: Process = {
    terminal: bool(p, "tty"),
    user: { uid: uid ?? 0, gid: gid ?? 0, additionalGids: multi(p, "additional-gids").map(Number) },
    args: cmd,
    env: [...(base?.env ?? []), ...multi(p, "env")],
    cwd: str(p, "cwd") ?? base?.cwd ?? "/",
    noNewPrivileges: bool(p, "no-new-privs") || (base?.noNewPrivileges ?? false),
  };
  const caps = base?.capabilities ?? {};
  const extra = multi(p, "cap");
  proc.capabilities = {
    bounding: [...(caps.bounding ?? []), ...extra],
    effective: [...(caps.effective ?? []), ...extra],
    permitted: [...(caps.permitted ?? []), ...extra],
    inheritable: [...(caps.inheritable ?? [])],
    ambient: [...(caps.ambient ?? []), ...extra],
  };
  if (base?.rlimits) proc.rlimits = base.rlimits;
  return proc;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return `${rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]! + 3))
        .join("")
        .trimEnd(),
    )
    .join("\n")}\n`;
}

async function dispatch(cmd: string, p: Parsed, rt: Runtime): Promise<number> {
  const preserve = () => int(p, "preserve-fds") ?? 0;
  switch (cmd) {
    case "create": {
      const id = needId(p, cmd);
      await rt.create(id, {
        bundle: str(p, "bundle") ?? ".",
        pidFile: str(p, "pid-file"),
        consoleSocket: str(p, "console-socket"),
        preserveFds: preserve(),
        noPivot: bool(p, "no-pivot"),
        noNewKeyring: bool(p, "no-new-keyring"),
      });
      return 0;
    }
    case "run": {
      const id = needId(p, cmd);
      return await rt.run(id, {
        bundle: str(p, "bundle") ?? ".",
        pidFile: str(p, "pid-file"),
        consoleSocket: str(p, "console-socket"),
        preserveFds: preserve(),
        noPivot: bool(p, "no-pivot"),
        noNewKeyring: bool(p, "no-new-keyring"),
        detach: bool(p, "detach"),
      });
    }
    case "start":
      await rt.start(needId(p, cmd));
      return 0;
    case "state":
      writeStdout(`${JSON.stringify(rt.state(needId(p, cmd)), null, 2)}\n`);
      return 0;
    case "kill":
      rt.kill(needId(p, cmd), p.args[1] ?? "SIGTERM", { all: bool(p, "all") });
      return 0;
    case "delete": {
      const ids = p.args.length ? p.args : [needId(p, cmd)];
      for (const id of ids) {
        try {
          await rt.delete(id, { force: bool(p, "force") });
        } catch (err) {
          // runc: a forced delete of an unknown container (e.g. an aborted create) succeeds
          if (!(bool(p, "force") && err instanceof ContainerError && err.code === "not_found")) throw err;
          rt.store.remove(id);
        }
      }
      return 0;
    }
    case "list": {
      const list = rt.list();
      if (bool(p, "quiet")) writeStdout(list.map((s) => `${s.id}\n`).join(""));
      else if (str(p, "format") === "json") writeStdout(`${JSON.stringify(list)}\n`);
      else
        writeStdout(
          table([
            ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
            ...list.map((s) => [s.id, String(s.pid), s.status, s.bundle, s.created, s.owner || "root"]),
          ]),
        );
      return 0;
    }
    case "ps": {
      const id = needId(p, cmd);
      if (str(p, "format") === "json") writeStdout(`${JSON.stringify(rt.ps(id))}\n`);
      else writeStdout(rt.psTable(id, p.args.slice(1)));
      return 0;
    }
    case "exec": {
      const id = needId(p, cmd);
      return await rt.exec(id, execProcess(rt, id, p), {
        consoleSocket: str(p, "console-socket"),
        pidFile: str(p, "pid-file"),
        detach: bool(p, "detach"),
        preserveFds: preserve(),
      });
    }
    case "pause":
      rt.pause(needId(p, cmd));
      return 0;
    case "resume":
      rt.resume(needId(p, cmd));
      return 0;
    case "update":
      rt.update(needId(p, cmd), resourcesFromFlags(p));
      return 0;
    case "spec": {
      const { defaultSpec } = await import("../container/default_spec.js");
      const path = join(callerPath(str(p, "bundle") ?? "."), "config.json");
      if (existsSync(path))
        throw new ContainerError("exists", `File ${path} exists. Remove it first or use a different bundle`);
      writeFileSync(path, `${JSON.stringify(defaultSpec({ rootless: bool(p, "rootless") }), null, "\t")}\n`);
      return 0;
    }
    case "features": {
      const { features } = await import("../container/features.js");
      writeStdout(`${JSON.stringify(features(), null, 2)}\n`);
      return 0;
    }
    default:
      throw new UsageError("bad_command", `unknown command "${cmd}"\n${usage()}`);
  }
}

export async function run(argv: string[]): Promise<number> {
  let log = new RuntimeLog(undefined);
  try {
    const g = parseFlags(argv, GLOBAL, true);
    const format = str(g, "log-format") ?? "text";
    if (format !== "text" && format !== "json")
      throw new UsageError("bad_flag", `--log-format must be text or json, got "${format}"`);
    const logFile = str(g, "log");
    log = new RuntimeLog(logFile ? callerPath(logFile) : undefined, format as LogFormat, bool(g, "debug"));
    if (bool(g, "version")) {
      writeStdout("vessel-runc version 0.1.0\nspec: 1.1.0\n");
      return 0;
    }
    const cmd = g.args[0];
    if (!cmd || bool(g, "help") || cmd === "help") {
      writeStdout(usage());
      return cmd || bool(g, "help") ? 0 : 2;
    }
    const def = COMMANDS[cmd];
    if (!def) throw new UsageError("bad_command", `unknown command "${cmd}"`);
    const p = parseFlags(g.args.slice(1), { ...def.flags, help: "bool" }, def.stop ?? false);
    if (def.stop) {
      // exec: flags come before the id; everything after the id is the command
      const rest = parseFlags(p.args.slice(1), def.flags, true);
      Object.assign(p.flags, rest.flags);
      p.args = [p.args[0] ?? "", ...rest.args].filter((a, i) => i > 0 || a !== "");
    }
    const root = str(g, "root");
    const rt = new Runtime({ ...(root ? { root } : {}), systemdCgroup: bool(g, "systemd-cgroup"), log });
    log.debug(`vessel-runc ${argv.join(" ")}`);
    return await dispatch(cmd, p, rt);
  } catch (err) {
    log.error(describeError(err));
    if (process.env.VESSEL_DEBUG) log.error((err as Error).stack ?? "");
    return err instanceof UsageError ? 2 : 1;
  }
}
