import { existsSync } from "node:fs";
import { attachSocketPath, attachTerminal } from "./attach.js";
import { DEFAULT_DETACH_KEYS, parseDetachKeys } from "./detach_keys.js";
import { ManagerError } from "./errors.js";
import { readLogFrom } from "./log.js";
import type { Manager } from "./manager.js";
import { pidAlive } from "./state.js";

/**
 * `vessel container attach`, as docker's: a container started with -t (detached) has its pty
 * held by its monitor, and the caller's terminal is connected to it; with -i what is typed goes
 * in. A container without a terminal has its output followed (its stdin was never kept: a
 * detached container's stdin is /dev/null). Either way the attach ends when the container exits,
 * with its exit status, or on the detach keys (Ctrl-C too, without a terminal), leaving it running.
 */

export type AttachOutcome = { detached: true } | { detached: false; exitCode: number };

/** The exit status once the monitor is done; 137 if the container was removed meanwhile (rm -f kills it). */
async function exitStatus(m: Manager, id: string): Promise<number> {
  for (;;) {
    let s: ReturnType<Manager["containers"]["state"]>;
    try {
      s = m.containers.state(id);
    } catch {
      return 137;
    }
    if (s.status !== "running" && !pidAlive(s.monitorPid)) return s.exitCode ?? 0;
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function attachContainer(
  m: Manager,
  ref: string,
  opts: { detachKeys?: string; noStdin?: boolean },
): Promise<AttachOutcome> {
  const detachKeys = parseDetachKeys(opts.detachKeys ?? DEFAULT_DETACH_KEYS);
  const { config, state } = m.view(ref);
  if (state.status !== "running") {
    throw new ManagerError(
      "NOT_RUNNING",
      `cannot attach to container ${config.name}: it is ${state.status}; start it first (vessel container start ${config.name})`,
      { id: config.id },
    );
  }
  if (config.tty) {
    const path = attachSocketPath(config.id);
    if (!existsSync(path)) {
      throw new ManagerError(
        "NOT_ATTACHABLE",
        `container ${config.name} has no terminal to attach to (${path} is missing): its runtime cannot keep a detached pty; use vessel container logs -f, or Vessel's own runtime (unset VESSEL_OCI_RUNTIME)`,
        { id: config.id },
      );
    }
    const r = await attachTerminal(path, {
      detachKeys,
      input: config.interactive && !(opts.noStdin ?? false),
    });
    if (r.detached || r.exitCode >= 0) return r;
    return { detached: false, exitCode: await exitStatus(m, config.id) };
  }
  return followOutput(m, config.id);
}

/** A container without a terminal: its output from now on, until it exits or Ctrl-C. */
async function followOutput(m: Manager, id: string): Promise<AttachOutcome> {
  const path = m.containers.path(id, "log.json");
  let offset = readLogFrom(path, 0).offset;
  let interrupted = false;
  const onInt = () => {
    interrupted = true;
  };
  process.on("SIGINT", onInt);
  try {
    for (;;) {
      const r = readLogFrom(path, offset);
      offset = r.offset;
      for (const l of r.lines) (l.stream === "stderr" ? process.stderr : process.stdout).write(l.log);
      if (interrupted) return { detached: true };
      const s = m.containers.state(id);
      if (s.status !== "running" && !pidAlive(s.monitorPid)) {
        const last = readLogFrom(path, offset);
        for (const l of last.lines) (l.stream === "stderr" ? process.stderr : process.stdout).write(l.log);
        return { detached: false, exitCode: s.exitCode ?? 0 };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    process.off("SIGINT", onInt);
  }
}
