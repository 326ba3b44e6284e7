import { describeError, UsageError, VesselError } from "../errors.js";

/**
 * The `vessel` command. Every verb is one file in this folder exporting `run(args): Promise<number>`
 * over the library (crun's src/create.c over libcrun/); no logic lives only here.
 */
const VERBS: Record<string, { file: string; summary: string }> = {
  "vm run": { file: "vm_run", summary: "boot a virtual machine (default: the default guest)" },
  "guest build": { file: "guest_build", summary: "build the default guest kernel and initramfs" },
  container: {
    file: "container",
    summary: "run and manage containers (docker's verbs: run, ps, logs, exec, stop, rm, ...)",
  },
  network: { file: "network", summary: "create, list and remove container networks (DNS by container name)" },
  compose: {
    file: "compose",
    summary: "run a multi-container application from a compose file (up, down, ps, logs)",
  },
  image: { file: "image", summary: "build, list, save, load and import container images" },
  runtime: { file: "runtime", summary: "the OCI runtime, runc-compatible (also installed as vessel-runc)" },
};

function usage(): string {
  const lines = Object.entries(VERBS).map(([verb, v]) => `  vessel ${verb.padEnd(16)} ${v.summary}`);
  return `usage: vessel <command> [options]\n\ncommands:\n${lines.join("\n")}\n`;
}

export async function runCli(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    process.stdout.write(usage());
    return argv.length === 0 ? 2 : 0;
  }
  const two = `${argv[0]} ${argv[1] ?? ""}`;
  const verb = VERBS[two] ? two : VERBS[argv[0]!] ? argv[0]! : undefined;
  if (verb === undefined) {
    process.stderr.write(`vessel: unknown command "${argv.slice(0, 2).join(" ")}"\n${usage()}`);
    return 2;
  }
  const rest = argv.slice(verb.split(" ").length);
  try {
    const mod = (await import(`./${VERBS[verb]!.file}.js`)) as { run(args: string[]): Promise<number> };
    return await mod.run(rest);
  } catch (err) {
    process.stderr.write(`vessel ${verb}: ${describeError(err)}\n`);
    if (err instanceof UsageError) return 2;
    if (err instanceof VesselError) return 1;
    if (process.env.VESSEL_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return 1;
  }
}
