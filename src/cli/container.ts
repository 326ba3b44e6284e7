import { writeSync } from "node:fs";
import { UsageError } from "../errors.js";
import { shortId } from "../container/image/digest.js";
import { formatLine, readLog, readLogFrom } from "../container/manager/log.js";
import { healthSuffix, readHealth } from "../container/manager/health.js";
import { Manager } from "../container/manager/manager.js";
import { parseNetwork } from "../container/manager/options.js";
import { pidAlive } from "../container/manager/state.js";
import { ago, bool, type FlagSpec, humanSize, list, parseDockerArgs, str, table } from "./docker_args.js";

/**
 * `vessel container <verb>`: docker's container verbs over src/container/manager/.
 * run, ps, logs, exec, attach, stop, kill, rm, inspect, stats, prune.
 */

const RUN_FLAGS: Record<string, FlagSpec> = {
  detach: { short: "d" },
  interactive: { short: "i" },
  tty: { short: "t" },
  rm: {},
  name: { value: true },
  env: { short: "e", value: true, multi: true },
  "env-file": { value: true, multi: true },
  volume: { short: "v", value: true, multi: true },
  publish: { short: "p", value: true, multi: true },
  memory: { short: "m", value: true },
  cpus: { value: true },
  "pids-limit": { value: true },
  user: { short: "u", value: true },
  "read-only": {},
  network: { value: true },
  net: { value: true },
  "network-alias": { value: true, multi: true },
  restart: { value: true },
  entrypoint: { value: true },
  workdir: { short: "w", value: true },
  hostname: { short: "h", value: true },
  label: { short: "l", value: true, multi: true },
};

const USAGE = `usage: vessel container <command>

  run [-d] [-i] [-t] [--rm] [--name N] [-e K=V] [--env-file F] [-v SRC:DST[:ro]]
      [-p [IP:]HOST:CTR[/tcp|/udp]] [--memory 64m] [--cpus 0.5] [--pids-limit N] [--user U[:G]]
      [--read-only] [--network bridge|host|none|NAME [--network-alias A]] [--restart no|on-failure[:N]|always] [-w DIR] [--entrypoint E]
      IMAGE [CMD...]
  create [run's flags] IMAGE [CMD...]
                            the container's record only; \`start\` runs it (detached)
  ps [-a] [-q]              list containers
  logs [-f] [--tail N] [-t] C
  exec [-i] [-t] [-e K=V] [-u U] [-w DIR] C CMD...
                            -t: a pty of its own, sized from this terminal
  attach [--detach-keys KEYS] [--no-stdin] C
                            this terminal to a running container's (started with -d -t [-i]),
                            or its output; Ctrl-P Ctrl-Q (or KEYS, e.g. "ctrl-a,x") detaches
  stop [-t SECONDS] C...    SIGTERM (the image's stop signal), SIGKILL after the timeout
  start C... / restart C... start a stopped container again (detached), keeping its files
  kill [-s SIGNAL] C...
  rm [-f] C...
  inspect C...
  stats [--no-stream] [C...]
  prune                     remove every stopped container
`;

export async function run(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (rest[0] === "--help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const m = new Manager();
  switch (verb) {
    case "run":
      return runVerb(m, rest);
    case "create":
      return runVerb(m, rest, true);
    case "ps":
    case "ls":
    case "list":
      return ps(m, rest);
    case "logs":
      return logs(m, rest);
    case "exec":
      return execVerb(m, rest);
    case "attach":
      return attachVerb(m, rest);
    case "stop":
      return stop(m, rest);
    case "start":
    case "restart": {
      const p = parseDockerArgs(rest, { time: { short: "t", value: true } }, false);
      if (p.positionals.length === 0)
        throw new UsageError("NO_CONTAINER", `${verb} needs at least one container`);
      for (const ref of p.positionals) {
        if (verb === "restart") await m.stop(ref, Number(str(p, "time") ?? 10));
        await m.start(ref);
        process.stdout.write(`${ref}\n`);
      }
      return 0;
    }
    case "kill":
      return kill(m, rest);
    case "rm":
    case "remove":
      return rm(m, rest);
    case "inspect":
      return inspect(m, rest);
    case "stats":
      return stats(m, rest);
    case "prune":
      for (const id of await m.prune()) process.stdout.write(`${id}\n`);
      return 0;
    case undefined:
    case "help":
    case "--help":
      process.stdout.write(USAGE);
      return verb === undefined ? 2 : 0;
    default:
      throw new UsageError("BAD_VERB", `unknown container command "${verb}"\n${USAGE}`);
  }
}

async function runVerb(m: Manager, args: string[], createOnly = false): Promise<number> {
  const p = parseDockerArgs(args, RUN_FLAGS, true);
  const [image, ...cmd] = p.positionals;
  if (image === undefined) throw new UsageError("NO_IMAGE", `run needs an image\n${USAGE}`);
  const net = str(p, "network") ?? str(p, "net");
  const labels: Record<string, string> = {};
  for (const l of list(p, "label")) {
    const eq = l.indexOf("=");
    labels[eq < 0 ? l : l.slice(0, eq)] = eq < 0 ? "" : l.slice(eq + 1);
  }
  // a missing busybox or debian image is built from Debian's packages, as docker pulls one;
  // written with writeSync: process.stderr as a stream would make fd 2 non-blocking, and an
  // attached container shares it
  if (m.images.find(image) === undefined) {
    const { baseImage } = await import("../container/build/builder.js");
    await baseImage(m.images, image, (line) => writeSync(2, `${line}\n`));
  }
  const detach = bool(p, "detach");
  // -d -t: the container's monitor keeps its pty for `attach` when the runtime lets it
  const tty = bool(p, "tty") && (!detach || (await m.driver()).holdsTerminal);
  if (detach && bool(p, "tty") && !tty)
    process.stderr.write(
      `vessel: -t with -d: the runtime ${(await m.driver()).name} cannot keep a detached terminal; its output goes to the log\n`,
    );
  const opt = <K extends string>(k: K, v: string | undefined) => (v !== undefined ? { [k]: v } : {});
  const cfg = m.create({
    image,
    args: cmd,
    detach,
    interactive: bool(p, "interactive"),
    tty,
    autoRemove: bool(p, "rm"),
    env: list(p, "env"),
    envFiles: list(p, "env-file"),
    volumes: list(p, "volume"),
    ports: list(p, "publish"),
    readOnly: bool(p, "read-only"),
    network: parseNetwork(net ?? "bridge"),
    networkAliases: list(p, "network-alias"),
    labels,
    ...opt("name", str(p, "name")),
    ...opt("memory", str(p, "memory")),
    ...opt("cpus", str(p, "cpus")),
    ...opt("pidsLimit", str(p, "pids-limit")),
    ...opt("user", str(p, "user")),
    ...opt("restart", str(p, "restart")),
    ...opt("entrypoint", str(p, "entrypoint")),
    ...opt("workdir", str(p, "workdir")),
    ...opt("hostname", str(p, "hostname")),
  });
  if (createOnly) {
    process.stdout.write(`${cfg.id}\n`);
    return 0;
  }
  if (detach) {
    try {
      await m.startDetached(cfg.id);
    } catch (err) {
      if (cfg.autoRemove) await m.remove(cfg.id, true).catch(() => undefined);
      throw err;
    }
    process.stdout.write(`${cfg.id}\n`);
    return 0;
  }
  return m.runAttached(cfg.id);
}

/** docker ps's STATUS column ("Up 5 seconds (healthy)", "Exited (0) 2 minutes ago"); compose ps shows it too. */
export function status(m: Manager, v: ReturnType<Manager["list"]>[number]): string {
  const s = v.state;
  if (s.status === "running")
    return `Up ${ago(s.startedAt).replace(/ ago$/, "")}${v.config.healthcheck ? healthSuffix(readHealth(m.containers, v.config.id)) : ""}`;
  if (s.status === "exited") return `Exited (${s.exitCode ?? 0}) ${ago(s.finishedAt)}`;
  return s.status[0]!.toUpperCase() + s.status.slice(1);
}

function ps(m: Manager, args: string[]): number {
  const p = parseDockerArgs(args, { all: { short: "a" }, quiet: { short: "q" } }, false);
  const views = m.list(bool(p, "all"));
  if (bool(p, "quiet")) {
    for (const v of views) process.stdout.write(`${shortId(v.config.id)}\n`);
    return 0;
  }
  const rows = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]];
  for (const v of views) {
    const cmd = v.config.args.join(" ");
    rows.push([
      shortId(v.config.id),
      v.config.image,
      JSON.stringify(cmd.length > 20 ? `${cmd.slice(0, 19)}…` : cmd),
      ago(v.config.created),
      status(m, v),
      v.config.ports
        .map((x) => `${x.hostIp}:${x.hostPort}->${x.containerPort}/${x.protocol ?? "tcp"}`)
        .join(", "),
      v.config.name,
    ]);
  }
  process.stdout.write(table(rows));
  return 0;
}

async function logs(m: Manager, args: string[]): Promise<number> {
  const p = parseDockerArgs(
    args,
    { follow: { short: "f" }, tail: { short: "n", value: true }, timestamps: { short: "t" } },
    false,
  );
  const ref = p.positionals[0];
  if (ref === undefined) throw new UsageError("NO_CONTAINER", "logs needs a container");
  const path = m.logPath(ref);
  const tailText = str(p, "tail");
  let tail: number | undefined;
  if (tailText !== undefined && tailText !== "all") {
    if (!/^\d+$/.test(tailText))
      throw new UsageError("BAD_FLAG", `invalid --tail "${tailText}" (expected a number of lines or "all")`);
    tail = Number(tailText);
  }
  const ts = bool(p, "timestamps");
  const emit = (l: { log: string; stream: "stdout" | "stderr"; time: string }) =>
    (l.stream === "stderr" ? process.stderr : process.stdout).write(formatLine(l, ts));
  let { lines, offset } = readLog(path, tail);
  lines.forEach(emit);
  if (!bool(p, "follow")) return 0;
  const id = m.view(ref).config.id;
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    ({ lines, offset } = readLogFrom(path, offset));
    lines.forEach(emit);
    let state: ReturnType<Manager["view"]>["state"];
    try {
      state = m.view(id).state;
    } catch {
      return 0; // removed
    }
    if (state.status !== "running" && !pidAlive(state.monitorPid)) {
      ({ lines, offset } = readLogFrom(path, offset));
      lines.forEach(emit);
      return 0;
    }
  }
}

async function execVerb(m: Manager, args: string[]): Promise<number> {
  const p = parseDockerArgs(
    args,
    {
      interactive: { short: "i" },
      tty: { short: "t" },
      detach: { short: "d" },
      env: { short: "e", value: true, multi: true },
      user: { short: "u", value: true },
      workdir: { short: "w", value: true },
    },
    true,
  );
  const [ref, ...cmd] = p.positionals;
  if (ref === undefined) throw new UsageError("NO_CONTAINER", "exec needs a container and a command");
  const interactive = bool(p, "interactive");
  const tty = bool(p, "tty");
  if (bool(p, "detach")) throw new UsageError("BAD_FLAG", "exec -d is not supported: run exec without -d");
  // without -t the process gets this terminal as its stdio; with -t a pty of its own (-i: with input)
  const ignore = () => undefined;
  process.on("SIGINT", ignore);
  try {
    return await m.exec(ref, cmd, {
      tty,
      interactive,
      env: list(p, "env"),
      ...(str(p, "user") ? { user: str(p, "user")! } : {}),
      ...(str(p, "workdir") ? { workdir: str(p, "workdir")! } : {}),
    });
  } finally {
    process.off("SIGINT", ignore);
  }
}

async function attachVerb(m: Manager, args: string[]): Promise<number> {
  const p = parseDockerArgs(args, { "detach-keys": { value: true }, "no-stdin": {} }, false);
  const ref = p.positionals[0];
  if (ref === undefined || p.positionals.length > 1)
    throw new UsageError("NO_CONTAINER", "attach needs exactly one container");
  const keys = str(p, "detach-keys");
  const r = await m.attach(ref, {
    ...(keys !== undefined ? { detachKeys: keys } : {}),
    noStdin: bool(p, "no-stdin"),
  });
  return r.detached ? 0 : r.exitCode;
}

async function stop(m: Manager, args: string[]): Promise<number> {
  const p = parseDockerArgs(args, { time: { short: "t", value: true } }, false);
  if (p.positionals.length === 0) throw new UsageError("NO_CONTAINER", "stop needs at least one container");
  const t = Number(str(p, "time") ?? 10);
  for (const ref of p.positionals) {
    await m.stop(ref, t);
    process.stdout.write(`${ref}\n`);
  }
  return 0;
}

async function kill(m: Manager, args: string[]): Promise<number> {
  const p = parseDockerArgs(args, { signal: { short: "s", value: true } }, false);
  if (p.positionals.length === 0) throw new UsageError("NO_CONTAINER", "kill needs at least one container");
  for (const ref of p.positionals) {
    await m.kill(ref, str(p, "signal") ?? "SIGKILL");
    process.stdout.write(`${ref}\n`);
  }
  return 0;
}

async function rm(m: Manager, args: string[]): Promise<number> {
  const p = parseDockerArgs(args, { force: { short: "f" }, volumes: { short: "v" } }, false);
  if (p.positionals.length === 0) throw new UsageError("NO_CONTAINER", "rm needs at least one container");
  let failed = 0;
  for (const ref of p.positionals) {
    try {
      await m.remove(ref, bool(p, "force"));
      process.stdout.write(`${ref}\n`);
    } catch (err) {
      if (p.positionals.length === 1) throw err;
      process.stderr.write(`vessel container rm: ${(err as Error).message}\n`);
      failed++;
    }
  }
  return failed ? 1 : 0;
}

function inspect(m: Manager, args: string[]): number {
  const p = parseDockerArgs(args, { format: { short: "f", value: true } }, false);
  if (p.positionals.length === 0) throw new UsageError("NO_CONTAINER", "inspect needs a container");
  const out = p.positionals.map((r) => m.inspect(r));
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}

async function stats(m: Manager, args: string[]): Promise<number> {
  const p = parseDockerArgs(args, { "no-stream": {}, all: { short: "a" } }, false);
  const refs = p.positionals.length ? p.positionals : m.list(false).map((v) => v.config.id);
  const once = async () => {
    const a = refs.map((r) => m.stats(r));
    const t0 = process.hrtime.bigint();
    await new Promise((r) => setTimeout(r, 500));
    const b = refs.map((r) => m.stats(r));
    const dt = Number(process.hrtime.bigint() - t0);
    const rows = [["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS"]];
    b.forEach((s, i) => {
      const cpu = ((s.cpuNs - a[i]!.cpuNs) / dt) * 100;
      rows.push([
        shortId(s.id),
        s.name,
        `${cpu.toFixed(2)}%`,
        `${humanSize(s.memory)} / ${s.memoryLimit > 2 ** 62 ? "unlimited" : humanSize(s.memoryLimit)}`,
        String(s.pids),
      ]);
    });
    process.stdout.write(table(rows));
  };
  if (bool(p, "no-stream")) {
    await once();
    return 0;
  }
  for (;;) {
    process.stdout.write("\x1b[2J\x1b[H");
    await once();
  }
}
