import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CgroupRecord, cgroupManagerFromRecord } from "./cgroups.js";
import { ContainerError, notExist } from "./errors.js";

/**
 * The runtime's record of each container: `<root>/<id>/state.json`, plus `exec.fifo` while the
 * container is "created" (its init blocks on the fifo until `start`). The default root is fixed
 * (/run/vessel-runc) because podman runs `state` with no --root and no PATH.
 */
export const DEFAULT_ROOT = "/run/vessel-runc";

export type Status = "creating" | "created" | "running" | "paused" | "stopped";

export interface ContainerRecord {
  id: string;
  /** host pid of the container's init */
  pid: number;
  /** the init's start time (field 22 of /proc/<pid>/stat), so a reused pid is not mistaken for it */
  startTime: string;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations: Record<string, string>;
  cgroup: CgroupRecord;
  systemdCgroup: boolean;
}

/** The runtime spec's state (runtime.md "State"), as `state` prints it (runc adds rootfs/created/owner). */
export interface OciState {
  ociVersion: string;
  id: string;
  status: Status;
  pid: number;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations?: Record<string, string>;
}

export const OCI_VERSION = "1.1.0";

const ID_RE = /^[A-Za-z0-9_+\-.]{1,1024}$/;

export function checkId(id: string | undefined): string {
  if (!id) throw new ContainerError("no_id", "a container id is required");
  if (!ID_RE.test(id) || id === "." || id === "..")
    throw new ContainerError(
      "bad_id",
      `invalid container id "${id}": use letters, digits, "_", "+", "-" and "."`,
    );
  return id;
}

/** Reads field 3 (state) and 22 (starttime) of /proc/<pid>/stat; undefined when gone. */
export function procStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { state: rest[0] ?? "", startTime: rest[19] ?? "" };
  } catch {
    return undefined;
  }
}

export class StateStore {
  constructor(readonly root: string = DEFAULT_ROOT) {}

  dir(id: string): string {
    return join(this.root, checkId(id));
  }

  fifo(id: string): string {
    return join(this.dir(id), "exec.fifo");
  }

  exists(id: string): boolean {
    return existsSync(join(this.dir(id), "state.json")) || existsSync(this.dir(id));
  }

  /** Makes the state directory; fails if the id is taken (runc: "container with id exists"). */
  claim(id: string): string {
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    const dir = this.dir(id);
    try {
      mkdirSync(dir, { mode: 0o711 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST")
        throw new ContainerError("exists", `container with id "${id}" already exists`, { id }, err);
      throw err;
    }
    return dir;
  }

  read(id: string): ContainerRecord {
    try {
      return JSON.parse(readFileSync(join(this.dir(id), "state.json"), "utf8")) as ContainerRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw notExist(id);
      throw new ContainerError(
        "state_corrupt",
        `state of container "${id}" is unreadable: ${(err as Error).message}`,
        { id },
        err,
      );
    }
  }

  write(rec: ContainerRecord): void {
    const dir = this.dir(rec.id);
    const tmp = join(dir, "state.json.tmp");
    writeFileSync(tmp, JSON.stringify(rec));
    renameSync(tmp, join(dir, "state.json"));
  }

  remove(id: string): void {
    rmSync(this.dir(id), { recursive: true, force: true });
  }

  ids(): string[] {
    try {
      return readdirSync(this.root).filter(
        (n) => ID_RE.test(n) && existsSync(join(this.root, n, "state.json")),
      );
    } catch {
      return [];
    }
  }

  /** Where the container is in its life (runtime.md "Lifecycle"), from the kernel's view. */
  status(rec: ContainerRecord): Status {
    if (!isAlive(rec)) return "stopped";
    if (existsSync(this.fifo(rec.id))) return "created";
    if (cgroupManagerFromRecord(rec.cgroup).frozen()) return "paused";
    return "running";
  }

  ociState(rec: ContainerRecord): OciState {
    const status = this.status(rec);
    const s: OciState = {
      ociVersion: OCI_VERSION,
      id: rec.id,
      pid: status === "stopped" ? 0 : rec.pid,
      status,
      bundle: rec.bundle,
      rootfs: rec.rootfs,
      created: rec.created,
      owner: rec.owner,
    };
    if (Object.keys(rec.annotations).length > 0) s.annotations = rec.annotations;
    return s;
  }
}

export function isAlive(rec: { pid: number; startTime: string }): boolean {
  if (rec.pid <= 0) return false;
  const st = procStat(rec.pid);
  if (!st || st.startTime !== rec.startTime) return false;
  return st.state !== "Z" && st.state !== "X";
}
