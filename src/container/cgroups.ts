import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ContainerError } from "./errors.js";
import type { Resources } from "./spec.js";

/**
 * Control groups for one container, on the v1 hierarchies (one mount per controller, as on this
 * host) or on the v2 unified hierarchy. All file writes happen here, from the runtime process;
 * the helper only writes "0" into the cgroup.procs files this manager names, so that the
 * container's init is born inside its cgroups. Every path is under a `root` that tests set to a
 * temporary directory (kernel docs: Documentation/admin-guide/cgroup-v1/*.rst, cgroup-v2.rst).
 */

export interface CgroupMount {
  /** mount point, e.g. /sys/fs/cgroup/memory */
  mountpoint: string;
  /** v1 controllers of this hierarchy ("cpu", "memory", "name=systemd"); empty for v2 */
  controllers: string[];
  version: 1 | 2;
}

/** What the state file keeps, so that later commands (pause, delete) find the same cgroups. */
export interface CgroupRecord {
  version: 1 | 2;
  /** controller (or "unified") -> directory of this container's cgroup */
  paths: Record<string, string>;
}

/** Parses /proc/self/mountinfo for cgroup hierarchies (proc(5), "/proc/pid/mountinfo"). */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(" ");
    const right = line.slice(sep + 3).split(" ");
    const fstype = right[0];
    const mountpoint = left[4];
    if (mountpoint === undefined) continue;
    if (fstype === "cgroup2") out.push({ mountpoint, controllers: [], version: 2 });
    else if (fstype === "cgroup") {
      const opts = (right[2] ?? "").split(",");
      const known = [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "net_cls",
        "net_prio",
        "hugetlb",
        "perf_event",
        "rdma",
        "misc",
      ];
      const controllers = opts.filter((o) => known.includes(o) || o.startsWith("name="));
      out.push({ mountpoint, controllers, version: 1 });
    }
  }
  return out;
}

/**
 * Turns linux.cgroupsPath into a path below each hierarchy's root. With --systemd-cgroup the
 * spec uses "slice:prefix:name" (runc's systemd driver); there is no systemd to ask here, so the
 * same path systemd would create is made directly: "machine.slice:libpod:ID" becomes
 * "/machine.slice/libpod-ID.scope" ("a-b.slice" nests as "/a.slice/a-b.slice").
 */
export function cgroupRelativePath(cgroupsPath: string | undefined, id: string, systemd: boolean): string {
  if (!cgroupsPath) return `/vessel-runc/${id}`;
  if (systemd && /^[^/:]*:[^/:]*:[^/:]*$/.test(cgroupsPath)) {
    const [slice, prefix, name] = cgroupsPath.split(":") as [string, string, string];
    const parts: string[] = [];
    if (slice && slice !== "-.slice") {
      const base = slice.replace(/\.slice$/, "").split("-");
      for (let i = 1; i <= base.length; i++) parts.push(`${base.slice(0, i).join("-")}.slice`);
    } else parts.push("system.slice");
    parts.push(prefix ? `${prefix}-${name}.scope` : `${name}.scope`);
    return `/${parts.join("/")}`;
  }
  if (cgroupsPath.includes("..")) {
    throw new ContainerError("cgroup_path", `linux.cgroupsPath "${cgroupsPath}" must not contain ".."`);
  }
  return cgroupsPath.startsWith("/") ? cgroupsPath : `/${cgroupsPath}`;
}

export interface CgroupManager {
  readonly record: CgroupRecord;
  /** Makes the directories (and, v1, fills cpuset.cpus/mems; v2, enables controllers). */
  create(): void;
  /** Writes the limits. Throws ContainerError naming the file that the kernel refused. */
  apply(r: Resources): void;
  /** The cgroup.procs files the container's init joins before it clones. */
  procsFiles(): string[];
  pids(): number[];
  freeze(): void;
  thaw(): void;
  frozen(): boolean;
  /** Removes the directories; tolerates ones already gone. */
  destroy(): void;
}

function write(path: string, value: string | number): void {
  try {
    writeFileSync(path, String(value));
  } catch (err) {
    throw new ContainerError(
      "cgroup_write",
      `cannot write "${value}" to ${path}: ${(err as Error).message}`,
      { path, value },
      err,
    );
  }
}

function readPids(file: string): number[] {
  try {
    return readFileSync(file, "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map(Number);
  } catch {
    return [];
  }
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function rmdirPatiently(dir: string): void {
  for (let i = 0; ; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      // EBUSY while the last tasks are still exiting
      if (code !== "EBUSY" || i >= 100) {
        throw new ContainerError(
          "cgroup_remove",
          `cannot remove cgroup ${dir}: ${(err as Error).message}`,
          { dir },
          err,
        );
      }
      sleepMs(10);
    }
  }
}

/** Writes each (file, value) only when the file exists, for controllers a kernel may lack. */
function optional(dir: string, file: string, value: string | number): void {
  const p = join(dir, file);
  if (existsSync(p)) write(p, value);
}

/**
 * Device rules every container gets after its own (runc's specconv AllowedDevices): mknod of
 * anything, and rwm on the default nodes, the pty slaves (136:*), /dev/ptmx (5:2) and /dev/console.
 * Without these a config that denies all (as `runc spec` writes) could not open its terminal.
 */
export const DEFAULT_DEVICE_RULES: NonNullable<Resources["devices"]> = [
  { allow: true, type: "c", major: null, minor: null, access: "m" },
  { allow: true, type: "b", major: null, minor: null, access: "m" },
  { allow: true, type: "c", major: 1, minor: 3, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 8, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 7, access: "rwm" },
  { allow: true, type: "c", major: 5, minor: 0, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 5, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 9, access: "rwm" },
  { allow: true, type: "c", major: 5, minor: 1, access: "rwm" },
  { allow: true, type: "c", major: 136, minor: null, access: "rwm" },
  { allow: true, type: "c", major: 5, minor: 2, access: "rwm" },
];

function deviceRuleLine(d: NonNullable<Resources["devices"]>[number]): string {
  const n = (v: number | null | undefined) => (v === undefined || v === null || v < 0 ? "*" : String(v));
  const type = d.type && d.type !== "" ? d.type : "a";
  if (type === "a" && (d.major ?? -1) < 0 && (d.minor ?? -1) < 0) return "a";
  return `${type} ${n(d.major)}:${n(d.minor)} ${d.access || "rwm"}`;
}

export class CgroupV1 implements CgroupManager {
  readonly record: CgroupRecord;

  /** `mounts` are the v1 hierarchies; `rel` the container's path below each. */
  constructor(mounts: readonly CgroupMount[], rel: string);
  constructor(record: CgroupRecord);
  constructor(a: readonly CgroupMount[] | CgroupRecord, rel?: string) {
    if (!Array.isArray(a)) {
      this.record = a as CgroupRecord;
      return;
    }
    const paths: Record<string, string> = {};
    for (const m of a as readonly CgroupMount[]) {
      if (m.version !== 1) continue;
      for (const c of m.controllers) paths[c] = join(m.mountpoint, rel ?? "/");
    }
    this.record = { version: 1, paths };
  }

  private dir(controller: string): string | undefined {
    return this.record.paths[controller];
  }

  private dirs(): string[] {
    return [...new Set(Object.values(this.record.paths))];
  }

  create(): void {
    for (const d of this.dirs()) mkdirSync(d, { recursive: true });
    // A new v1 cpuset has empty cpus and mems, and no task may join it until they are set:
    // copy them down from the nearest ancestor that has them (cgroup-v1/cpusets.rst 1.3).
    const cpuset = this.dir("cpuset");
    if (cpuset) this.inheritCpuset(cpuset);
  }

  private inheritCpuset(dir: string): void {
    for (const file of ["cpuset.cpus", "cpuset.mems"]) {
      const chain: string[] = [];
      let d = dir;
      for (;;) {
        const p = join(d, file);
        let value = "";
        try {
          value = readFileSync(p, "utf8").trim();
        } catch {
          // a directory the kernel did not populate (or a test root): treat as empty
        }
        if (value !== "") {
          for (const c of chain.reverse()) write(join(c, file), value);
          break;
        }
        chain.push(d);
        const parent = join(d, "..");
        if (parent === d || !existsSync(join(parent, file))) break;
        d = parent;
      }
    }
  }

  apply(r: Resources): void {
    const mem = this.dir("memory");
    if (mem && r.memory) {
      const m = r.memory;
      const memsw = join(mem, "memory.memsw.limit_in_bytes");
      const limit = m.limit !== undefined ? (m.limit < 0 ? -1 : m.limit) : undefined;
      const swap = m.swap !== undefined && existsSync(memsw) ? (m.swap < 0 ? -1 : m.swap) : undefined;
      // memsw must stay >= limit at every step: raise memsw first when growing, limit first when shrinking
      if (swap !== undefined) {
        try {
          write(memsw, swap);
          if (limit !== undefined) write(join(mem, "memory.limit_in_bytes"), limit);
        } catch {
          if (limit !== undefined) write(join(mem, "memory.limit_in_bytes"), limit);
          write(memsw, swap);
        }
      } else if (limit !== undefined) write(join(mem, "memory.limit_in_bytes"), limit);
      if (m.reservation !== undefined) write(join(mem, "memory.soft_limit_in_bytes"), m.reservation);
      if (m.swappiness !== undefined && m.swappiness >= 0 && m.swappiness <= 100)
        optional(mem, "memory.swappiness", m.swappiness);
      if (m.disableOOMKiller) write(join(mem, "memory.oom_control"), 1);
    }
    const cpu = this.dir("cpu");
    if (cpu && r.cpu) {
      const c = r.cpu;
      if (c.shares) write(join(cpu, "cpu.shares"), c.shares);
      if (c.period) write(join(cpu, "cpu.cfs_period_us"), c.period);
      if (c.quota !== undefined && c.quota !== 0) write(join(cpu, "cpu.cfs_quota_us"), c.quota);
      if (c.realtimePeriod) optional(cpu, "cpu.rt_period_us", c.realtimePeriod);
      if (c.realtimeRuntime) optional(cpu, "cpu.rt_runtime_us", c.realtimeRuntime);
    }
    const cpuset = this.dir("cpuset");
    if (cpuset && r.cpu) {
      if (r.cpu.cpus) write(join(cpuset, "cpuset.cpus"), r.cpu.cpus);
      if (r.cpu.mems) write(join(cpuset, "cpuset.mems"), r.cpu.mems);
    }
    const pids = this.dir("pids");
    if (pids && r.pids) write(join(pids, "pids.max"), r.pids.limit > 0 ? r.pids.limit : "max");
    const blkio = this.dir("blkio");
    if (blkio && r.blockIO) {
      const b = r.blockIO;
      if (b.weight)
        optional(
          blkio,
          existsSync(join(blkio, "blkio.weight")) ? "blkio.weight" : "blkio.bfq.weight",
          b.weight,
        );
      const t: [keyof typeof b, string][] = [
        ["throttleReadBpsDevice", "blkio.throttle.read_bps_device"],
        ["throttleWriteBpsDevice", "blkio.throttle.write_bps_device"],
        ["throttleReadIOPSDevice", "blkio.throttle.read_iops_device"],
        ["throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"],
      ];
      for (const [key, file] of t) {
        for (const d of (b[key] as { major: number; minor: number; rate: number }[] | undefined) ?? [])
          write(join(blkio, file), `${d.major}:${d.minor} ${d.rate}`);
      }
    }
    const devices = this.dir("devices");
    if (devices && r.devices) {
      for (const d of r.devices)
        write(join(devices, d.allow ? "devices.allow" : "devices.deny"), deviceRuleLine(d));
    }
    const hugetlb = this.dir("hugetlb");
    if (hugetlb)
      for (const h of r.hugepageLimits ?? [])
        write(join(hugetlb, `hugetlb.${h.pageSize}.limit_in_bytes`), h.limit);
    const netcls = this.dir("net_cls");
    if (netcls && r.network?.classID !== undefined) write(join(netcls, "net_cls.classid"), r.network.classID);
    const netprio = this.dir("net_prio");
    if (netprio)
      for (const p of r.network?.priorities ?? [])
        write(join(netprio, "net_prio.ifpriomap"), `${p.name} ${p.priority}`);
    if (r.unified && Object.keys(r.unified).length > 0) {
      throw new ContainerError(
        "cgroup_unified",
        "linux.resources.unified needs cgroup v2; this host uses the v1 hierarchies",
      );
    }
  }

  procsFiles(): string[] {
    return this.dirs().map((d) => join(d, "cgroup.procs"));
  }

  pids(): number[] {
    const d = this.dir("pids") ?? this.dir("freezer") ?? this.dir("memory") ?? this.dirs()[0];
    return d ? readPids(join(d, "cgroup.procs")) : [];
  }

  freeze(): void {
    const d = this.dir("freezer");
    if (!d)
      throw new ContainerError(
        "no_freezer",
        "pause needs the freezer cgroup controller, which is not mounted",
      );
    write(join(d, "freezer.state"), "FROZEN");
    for (let i = 0; i < 500 && !this.frozen(); i++) sleepMs(2);
  }

  thaw(): void {
    const d = this.dir("freezer");
    if (!d)
      throw new ContainerError(
        "no_freezer",
        "resume needs the freezer cgroup controller, which is not mounted",
      );
    write(join(d, "freezer.state"), "THAWED");
  }

  frozen(): boolean {
    const d = this.dir("freezer");
    if (!d) return false;
    try {
      return readFileSync(join(d, "freezer.state"), "utf8").trim() === "FROZEN";
    } catch {
      return false;
    }
  }

  destroy(): void {
    for (const d of this.dirs()) rmdirPatiently(d);
  }
}

/** cpu.shares (2..262144) to cpu.weight (1..10000), the conversion runc and crun use. */
export function sharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

/** blkio.weight (10..1000) to io.weight (1..10000). */
export function blkioToIoWeight(w: number): number {
  return 1 + Math.floor(((w - 10) * 9999) / 990);
}

export class CgroupV2 implements CgroupManager {
  readonly record: CgroupRecord;
  private readonly mountpoint: string;

  constructor(mountpoint: string, rel: string);
  constructor(record: CgroupRecord);
  constructor(a: string | CgroupRecord, rel?: string) {
    if (typeof a === "string") {
      this.mountpoint = a;
      this.record = { version: 2, paths: { unified: join(a, rel ?? "/") } };
    } else {
      this.record = a;
      this.mountpoint = "";
    }
  }

  private get dir(): string {
    return this.record.paths.unified!;
  }

  create(): void {
    mkdirSync(this.dir, { recursive: true });
    if (!this.mountpoint) return;
    // enable every available controller down the path (cgroup-v2.rst "Enabling and Disabling")
    let available: string[] = [];
    try {
      available = readFileSync(join(this.mountpoint, "cgroup.controllers"), "utf8")
        .trim()
        .split(/\s+/)
        .filter(Boolean);
    } catch {
      return;
    }
    const wanted = available.filter((c) => ["cpu", "cpuset", "memory", "pids", "io"].includes(c));
    if (wanted.length === 0) return;
    const rel = this.dir.slice(this.mountpoint.length).split("/").filter(Boolean);
    let d = this.mountpoint;
    for (const part of rel) {
      write(join(d, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
      d = join(d, part);
    }
  }

  apply(r: Resources): void {
    const d = this.dir;
    const m = r.memory;
    if (m) {
      if (m.limit !== undefined) write(join(d, "memory.max"), m.limit < 0 ? "max" : m.limit);
      // OCI swap is memory+swap; memory.swap.max is swap alone
      if (m.swap !== undefined)
        write(join(d, "memory.swap.max"), m.swap < 0 ? "max" : Math.max(0, m.swap - (m.limit ?? 0)));
      if (m.reservation !== undefined) write(join(d, "memory.low"), m.reservation);
    }
    const c = r.cpu;
    if (c) {
      if (c.shares) write(join(d, "cpu.weight"), sharesToWeight(c.shares));
      if (c.quota !== undefined || c.period !== undefined) {
        const quota = c.quota === undefined || c.quota <= 0 ? "max" : String(c.quota);
        write(join(d, "cpu.max"), `${quota} ${c.period ?? 100000}`);
      }
      if (c.cpus) write(join(d, "cpuset.cpus"), c.cpus);
      if (c.mems) write(join(d, "cpuset.mems"), c.mems);
    }
    if (r.pids) write(join(d, "pids.max"), r.pids.limit > 0 ? r.pids.limit : "max");
    const b = r.blockIO;
    if (b) {
      if (b.weight) write(join(d, "io.weight"), `default ${blkioToIoWeight(b.weight)}`);
      const t: [keyof typeof b, string][] = [
        ["throttleReadBpsDevice", "rbps"],
        ["throttleWriteBpsDevice", "wbps"],
        ["throttleReadIOPSDevice", "riops"],
        ["throttleWriteIOPSDevice", "wiops"],
      ];
      for (const [key, name] of t) {
        for (const dev of (b[key] as { major: number; minor: number; rate: number }[] | undefined) ?? [])
          write(join(d, "io.max"), `${dev.major}:${dev.minor} ${name}=${dev.rate}`);
      }
    }
    for (const h of r.hugepageLimits ?? []) write(join(d, `hugetlb.${h.pageSize}.max`), h.limit);
    for (const [k, v] of Object.entries(r.unified ?? {})) {
      if (k.includes("/") || k.startsWith("."))
        throw new ContainerError("cgroup_unified", `unified key "${k}" is not a file name`);
      write(join(d, k), v);
    }
    // Device rules on v2 are an eBPF program (device_filter.ts), attached by the helper.
  }

  procsFiles(): string[] {
    return [join(this.dir, "cgroup.procs")];
  }

  pids(): number[] {
    return readPids(join(this.dir, "cgroup.procs"));
  }

  freeze(): void {
    write(join(this.dir, "cgroup.freeze"), 1);
    for (let i = 0; i < 500 && !this.frozen(); i++) sleepMs(2);
  }

  thaw(): void {
    write(join(this.dir, "cgroup.freeze"), 0);
  }

  frozen(): boolean {
    try {
      return /^frozen 1$/m.test(readFileSync(join(this.dir, "cgroup.events"), "utf8"));
    } catch {
      return false;
    }
  }

  destroy(): void {
    rmdirPatiently(this.dir);
  }
}

/**
 * Chooses the manager for this host: the v1 hierarchies when any v1 controller is mounted (this
 * host: cgroups v1 with an almost empty v2 beside it), the unified hierarchy otherwise.
 */
export function cgroupManagerFor(
  rel: string,
  mounts: readonly CgroupMount[] = hostCgroupMounts(),
): CgroupManager {
  const v1 = mounts.filter((m) => m.version === 1 && m.controllers.length > 0);
  if (v1.length > 0) return new CgroupV1(v1, rel);
  const v2 = mounts.find(
    (m) => m.version === 2 && (m.mountpoint === "/sys/fs/cgroup" || mounts.length === 1),
  );
  if (v2) return new CgroupV2(v2.mountpoint, rel);
  throw new ContainerError("no_cgroups", "no cgroup hierarchy is mounted (looked in /proc/self/mountinfo)");
}

export function cgroupManagerFromRecord(r: CgroupRecord): CgroupManager {
  return r.version === 1 ? new CgroupV1(r) : new CgroupV2(r);
}

export function hostCgroupMounts(): CgroupMount[] {
  return parseCgroupMounts(readFileSync("/proc/self/mountinfo", "utf8"));
}
