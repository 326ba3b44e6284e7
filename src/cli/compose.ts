import { basename } from "node:path";
import { UsageError } from "../errors.js";
import { findComposeFile, loadComposeFile, projectName } from "../container/compose/file.js";
import { ComposeProject, LABEL_SERVICE } from "../container/compose/project.js";
import type { LogLine } from "../container/manager/log.js";
import { Manager } from "../container/manager/manager.js";
import { status } from "./container.js";
import { ago, bool, parseDockerArgs, str, table } from "./docker_args.js";

/**
 * `vessel compose`: docker compose's up, down, ps and logs over src/container/compose/.
 * The project is the compose file's (-f, else compose.yaml / docker-compose.yml here); its name
 * is -p, else COMPOSE_PROJECT_NAME, else the file's `name:`, else the file's directory's name.
 */

const USAGE = `usage: vessel compose [-f FILE] [-p NAME] <command>

  up [-d] [--build]         build or find the images, make the project's network, start the
                            services in depends_on order; without -d, follow their output
                            (Ctrl-C stops them)
  down [-v] [-t SECONDS]    stop and remove the containers and the network (-v: named volumes too)
  ps [-a] [-q]              the project's containers
  logs [-f] [-t] [--tail N] [SERVICE...]
                            their output, each line after its container's name
`;

const GLOBAL = {
  file: { short: "f", value: true },
  "project-name": { short: "p", value: true },
} as const;

export async function run(args: string[]): Promise<number> {
  // global flags come before the command (as docker compose has them), and are also taken after it
  let i = 0;
  const globals: string[] = [];
  while (i < args.length && args[i]!.startsWith("-") && args[i] !== "--help") {
    const a = args[i]!;
    globals.push(a);
    if (!a.includes("=") && (a === "-f" || a === "-p" || a === "--file" || a === "--project-name"))
      globals.push(args[++i] ?? "");
    i++;
  }
  const verb = args[i];
  const rest = args.slice(i + 1);
  if (verb === undefined || verb === "help" || verb === "--help" || rest[0] === "--help") {
    process.stdout.write(USAGE);
    return verb === undefined ? 2 : 0;
  }
  const g = parseDockerArgs(globals, GLOBAL, false);
  if (g.positionals.length > 0)
    throw new UsageError("BAD_ARGS", `unexpected "${g.positionals[0]}"\n${USAGE}`);
  const m = new Manager();
  const open = (p: ReturnType<typeof parseDockerArgs>, needFile: boolean): ComposeProject => {
    const fileFlag = str(p, "file") ?? str(g, "file");
    const nameFlag = str(p, "project-name") ?? str(g, "project-name") ?? process.env.COMPOSE_PROJECT_NAME;
    let file: ReturnType<typeof loadComposeFile> | undefined;
    try {
      file = loadComposeFile(fileFlag ?? findComposeFile(process.cwd()));
    } catch (err) {
      if (needFile || nameFlag === undefined) throw err;
    }
    const name = projectName(nameFlag ?? file?.name ?? basename(file?.dir ?? process.cwd()));
    return new ComposeProject(m, file, name);
  };
  const report = (line: string) => process.stderr.write(` ${line}\n`);
  switch (verb) {
    case "up": {
      const p = parseDockerArgs(rest, { ...GLOBAL, detach: { short: "d" }, build: {} }, false);
      if (p.positionals.length > 0)
        throw new UsageError("BAD_ARGS", "up starts every service: naming services is not supported");
      const project = open(p, true);
      await project.up({ build: bool(p, "build"), report });
      if (bool(p, "detach")) return 0;
      return attached(project);
    }
    case "down": {
      const p = parseDockerArgs(
        rest,
        { ...GLOBAL, volumes: { short: "v" }, timeout: { short: "t", value: true } },
        false,
      );
      const t = str(p, "timeout");
      if (t !== undefined && !/^\d+$/.test(t))
        throw new UsageError("BAD_FLAG", `invalid -t "${t}" (seconds)`);
      await open(p, false).down({
        volumes: bool(p, "volumes"),
        report,
        ...(t ? { timeoutSec: Number(t) } : {}),
      });
      return 0;
    }
    case "ps": {
      const p = parseDockerArgs(rest, { ...GLOBAL, all: { short: "a" }, quiet: { short: "q" } }, false);
      const views = open(p, false)
        .containers()
        .filter((v) => bool(p, "all") || v.state.status === "running");
      if (bool(p, "quiet")) {
        for (const v of views) process.stdout.write(`${v.config.id.slice(0, 12)}\n`);
        return 0;
      }
      const rows = [["NAME", "IMAGE", "SERVICE", "CREATED", "STATUS", "PORTS"]];
      for (const v of views)
        rows.push([
          v.config.name,
          v.config.image,
          v.config.labels[LABEL_SERVICE] ?? "",
          ago(v.config.created),
          status(m, v),
          v.config.ports.map((x) => `${x.hostIp}:${x.hostPort}->${x.containerPort}/${x.protocol}`).join(", "),
        ]);
      process.stdout.write(table(rows));
      return 0;
    }
    case "logs": {
      const p = parseDockerArgs(
        rest,
        { ...GLOBAL, follow: { short: "f" }, timestamps: { short: "t" }, tail: { short: "n", value: true } },
        false,
      );
      const tail = str(p, "tail");
      if (tail !== undefined && tail !== "all" && !/^\d+$/.test(tail))
        throw new UsageError("BAD_FLAG", `invalid --tail "${tail}" (a number of lines or "all")`);
      const project = open(p, false);
      const known = new Set(project.containers().map((v) => v.config.labels[LABEL_SERVICE]));
      for (const s of p.positionals)
        if (!known.has(s))
          throw new UsageError("NO_SERVICE", `no container of service "${s}" in project ${project.name}`);
      await project.logs(printer(project, bool(p, "timestamps")), {
        services: p.positionals,
        follow: bool(p, "follow"),
        ...(tail !== undefined && tail !== "all" ? { tail: Number(tail) } : {}),
      });
      return 0;
    }
    default:
      throw new UsageError("BAD_VERB", `unknown compose command "${verb}"\n${USAGE}`);
  }
}

/** Prints a log line after its container's name, padded as docker compose pads them. */
function printer(project: ComposeProject, timestamps: boolean): (container: string, l: LogLine) => void {
  const width = Math.max(0, ...project.containers().map((v) => v.config.name.length));
  return (container, l) => {
    const text = `${container.padEnd(width)}  | ${timestamps ? `${l.time} ` : ""}${l.log.endsWith("\n") ? l.log : `${l.log}\n`}`;
    (l.stream === "stderr" ? process.stderr : process.stdout).write(text);
  };
}

/** up without -d: the services' output until they all exit; Ctrl-C stops them. */
async function attached(project: ComposeProject): Promise<number> {
  let interrupt: () => void = () => undefined;
  const stop = new Promise<void>((r) => (interrupt = r));
  const onSig = () => {
    process.stderr.write("Gracefully stopping... (press Ctrl+C again to force)\n");
    process.off("SIGINT", onSig);
    interrupt();
  };
  process.on("SIGINT", onSig);
  process.on("SIGTERM", onSig);
  try {
    await project.logs(printer(project, false), { follow: true, stop });
  } finally {
    process.off("SIGINT", onSig);
    process.off("SIGTERM", onSig);
  }
  await project.stop();
  for (const v of project.containers())
    process.stderr.write(
      `${v.config.name} exited with code ${project.manager.view(v.config.id).state.exitCode ?? 0}\n`,
    );
  return 0;
}
