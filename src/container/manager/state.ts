import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { HealthConfig } from "../build/dockerfile.js";
import { defaultRoot } from "../image/store.js";
import { ManagerError } from "./errors.js";
import type { NetworkMode, PortSpec, RestartPolicy, VolumeSpec } from "./options.js";

/**
 * What the manager keeps on disk per container, under `<root>/containers/<id>/`:
 * - `container.json`: how it was asked to run (ContainerConfig), written once;
 * - `state.json`: what it is doing (ContainerState), written by the monitor and the CLI;
 * - `bundle/config.json`: the OCI runtime config handed to the runtime, `bundle/rootfs` the
 *   overlay mount, `upper/` and `work/` its writable layer;
 * - `log.json`: the container's output, one JSON line per line of output (docker's json-file).
 * A state that says "running" is believed only if this boot made it and its monitor lives: after a
 * reboot `ps -a` shows the container as exited.
 */

export interface ContainerConfig {
  id: string;
  name: string;
  image: string;
  imageId: string;
  created: string;
  args: string[];
  env: string[];
  cwd: string;
  user: string;
  tty: boolean;
  interactive: boolean;
  detach: boolean;
  autoRemove: boolean;
  readOnly: boolean;
  network: NetworkMode;
  /** More names peers on a user network find it by (--network-alias), besides its name. */
  networkAliases?: string[];
  ports: PortSpec[];
  volumes: VolumeSpec[];
  memory?: number;
  cpus?: number;
  pidsLimit?: number;
  restart: RestartPolicy;
  hostname: string;
  stopSignal: string;
  labels: Record<string, string>;
  /** The image's HEALTHCHECK (or the request's), run by the monitor (health.ts). */
  healthcheck?: HealthConfig;
}

export type Status = "created" | "running" | "exited" | "removing";

export interface ContainerState {
  status: Status;
  /** Container init's pid in the host's pid namespace. */
  pid?: number;
  monitorPid?: number;
  exitCode?: number;
  startedAt?: string;
  finishedAt?: string;
  restartCount: number;
  /** Set by stop/kill so the monitor does not restart what a person stopped. */
  stopRequested?: boolean;
  bootId: string;
  ip?: string;
  error?: string;
}

export function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "unknown";
  }
}

export function pidAlive(pid: number | undefined): boolean {
  if (pid === undefined || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export class ContainerStore {
  readonly root: string;
  readonly dir: string;

  constructor(root: string = defaultRoot()) {
    this.root = root;
    this.dir = join(root, "containers");
    mkdirSync(this.dir, { recursive: true });
  }

  newId(): string {
    return randomBytes(32).toString("hex");
  }

  path(id: string, ...rest: string[]): string {
    return join(this.dir, id, ...rest);
  }

  ids(): string[] {
    return readdirSync(this.dir).filter(
      (n) => /^[0-9a-f]{64}$/.test(n) && existsSync(join(this.dir, n, "container.json")),
    );
  }

  writeConfig(cfg: ContainerConfig): void {
    mkdirSync(this.path(cfg.id), { recursive: true });
    writeJsonAtomic(this.path(cfg.id, "container.json"), cfg);
  }

  config(id: string): ContainerConfig {
    return JSON.parse(readFileSync(this.path(id, "container.json"), "utf8")) as ContainerConfig;
  }

  /** The recorded state, corrected: "running" with a dead monitor or from another boot is "exited". */
  state(id: string): ContainerState {
    let s: ContainerState;
    try {
      s = JSON.parse(readFileSync(this.path(id, "state.json"), "utf8")) as ContainerState;
    } catch {
      return { status: "created", restartCount: 0, bootId: bootId() };
    }
    if (s.status === "running" || s.status === "created") {
      const stale = s.bootId !== bootId() || (s.monitorPid !== undefined && !pidAlive(s.monitorPid));
      if (stale && s.status === "running") {
        s = { ...s, status: "exited", exitCode: s.exitCode ?? 255 };
        delete s.pid;
      }
    }
    return s;
  }

  writeState(id: string, s: ContainerState): void {
    writeJsonAtomic(this.path(id, "state.json"), s);
  }

  updateState(
    id: string,
    patch: { [K in keyof ContainerState]?: ContainerState[K] | undefined },
  ): ContainerState {
    const s = { ...this.state(id), ...patch } as ContainerState;
    for (const [k, v] of Object.entries(patch))
      if (v === undefined) delete (s as unknown as Record<string, unknown>)[k];
    this.writeState(id, s);
    return s;
  }

  /** Finds a container by full id, unique id prefix or name. */
  resolve(ref: string): string {
    const ids = this.ids();
    if (ids.includes(ref)) return ref;
    for (const id of ids) {
      try {
        if (this.config(id).name === ref.replace(/^\//, "")) return id;
      } catch {
        // half-written container: skip
      }
    }
    if (/^[0-9a-f]{3,63}$/.test(ref)) {
      const hits = ids.filter((id) => id.startsWith(ref));
      if (hits.length === 1) return hits[0]!;
      if (hits.length > 1) {
        throw new ManagerError(
          "AMBIGUOUS",
          `container id prefix "${ref}" matches ${hits.length} containers`,
          { ref },
        );
      }
    }
    throw new ManagerError(
      "NO_SUCH_CONTAINER",
      `no such container: "${ref}" (see \`vessel container ps -a\`)`,
      { ref },
    );
  }

  nameTaken(name: string): string | undefined {
    for (const id of this.ids()) {
      try {
        if (this.config(id).name === name) return id;
      } catch {
        // skip
      }
    }
    return undefined;
  }
}

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}

const ADJECTIVES = [
  "brave",
  "calm",
  "eager",
  "fond",
  "keen",
  "lucid",
  "merry",
  "nimble",
  "proud",
  "quiet",
  "sharp",
  "swift",
  "tidy",
  "vivid",
  "witty",
];
const NOUNS = [
  "ada",
  "babbage",
  "curie",
  "dijkstra",
  "euler",
  "gauss",
  "hopper",
  "knuth",
  "lovelace",
  "noether",
  "pascal",
  "ritchie",
  "thompson",
  "turing",
  "wirth",
];

/** A docker-like random name ("keen_turing"). */
export function randomName(taken: (n: string) => boolean): string {
  for (let i = 0; i < 100; i++) {
    const n = `${ADJECTIVES[Math.floor(Math.random() * ADJECTIVES.length)]}_${NOUNS[Math.floor(Math.random() * NOUNS.length)]}`;
    const name = i < 20 ? n : `${n}${i}`;
    if (!taken(name)) return name;
  }
  return `c_${randomBytes(4).toString("hex")}`;
}
