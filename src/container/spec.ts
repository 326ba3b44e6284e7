import { readFileSync, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { CAPABILITIES } from "./capabilities.js";
import { SpecError } from "./errors.js";
import { SECCOMP_ACTIONS, SECCOMP_ARCHES, SECCOMP_OPS } from "./seccomp_names.js";

/**
 * The OCI runtime spec's config.json (opencontainers/runtime-spec 1.1, config.md and
 * config-linux.md), the Linux parts Vessel implements. Field names are the spec's.
 */
export interface Spec {
  ociVersion: string;
  root?: { path: string; readonly?: boolean };
  process?: Process;
  hostname?: string;
  domainname?: string;
  mounts?: Mount[];
  hooks?: Hooks;
  annotations?: Record<string, string>;
  linux?: Linux;
}

export interface Process {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user: { uid: number; gid: number; umask?: number; additionalGids?: number[] };
  args?: string[];
  env?: string[];
  cwd: string;
  capabilities?: Partial<Record<CapabilitySet, string[]>>;
  rlimits?: { type: string; soft: number; hard: number }[];
  noNewPrivileges?: boolean;
  oomScoreAdj?: number;
  apparmorProfile?: string;
  selinuxLabel?: string;
}

export type CapabilitySet = "bounding" | "effective" | "inheritable" | "permitted" | "ambient";

export interface Mount {
  destination: string;
  source?: string;
  type?: string;
  options?: string[];
}

export interface Hook {
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

export type HookName =
  | "prestart"
  | "createRuntime"
  | "createContainer"
  | "startContainer"
  | "poststart"
  | "poststop";
export type Hooks = Partial<Record<HookName, Hook[]>>;

export interface Namespace {
  type: NamespaceType;
  path?: string;
}
export type NamespaceType = "pid" | "network" | "mount" | "ipc" | "uts" | "user" | "cgroup" | "time";

export interface IdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface Device {
  type: "c" | "b" | "u" | "p";
  path: string;
  major?: number;
  minor?: number;
  fileMode?: number;
  uid?: number;
  gid?: number;
}

export interface DeviceRule {
  allow: boolean;
  type?: string;
  major?: number | null;
  minor?: number | null;
  access?: string;
}

export interface Resources {
  devices?: DeviceRule[];
  memory?: {
    limit?: number;
    reservation?: number;
    swap?: number;
    kernel?: number;
    swappiness?: number;
    disableOOMKiller?: boolean;
  };
  cpu?: {
    shares?: number;
    quota?: number;
    period?: number;
    realtimeRuntime?: number;
    realtimePeriod?: number;
    cpus?: string;
    mems?: string;
  };
  pids?: { limit: number };
  blockIO?: {
    weight?: number;
    leafWeight?: number;
    throttleReadBpsDevice?: ThrottleDevice[];
    throttleWriteBpsDevice?: ThrottleDevice[];
    throttleReadIOPSDevice?: ThrottleDevice[];
    throttleWriteIOPSDevice?: ThrottleDevice[];
  };
  hugepageLimits?: { pageSize: string; limit: number }[];
  network?: { classID?: number; priorities?: { name: string; priority: number }[] };
  unified?: Record<string, string>;
}

export interface ThrottleDevice {
  major: number;
  minor: number;
  rate: number;
}

export interface SeccompSyscall {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
}

export interface Seccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  listenerPath?: string;
  syscalls?: SeccompSyscall[];
}

export interface Linux {
  namespaces?: Namespace[];
  uidMappings?: IdMapping[];
  gidMappings?: IdMapping[];
  devices?: Device[];
  cgroupsPath?: string;
  resources?: Resources;
  rootfsPropagation?: string;
  seccomp?: Seccomp;
  sysctl?: Record<string, string>;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
  personality?: { domain: string; flags?: string[] };
}

const NAMESPACES: readonly NamespaceType[] = [
  "pid",
  "network",
  "mount",
  "ipc",
  "uts",
  "user",
  "cgroup",
  "time",
];
const HOOK_NAMES: readonly HookName[] = [
  "prestart",
  "createRuntime",
  "createContainer",
  "startContainer",
  "poststart",
  "poststop",
];
export const RLIMITS: Readonly<Record<string, number>> = {
  RLIMIT_CPU: 0,
  RLIMIT_FSIZE: 1,
  RLIMIT_DATA: 2,
  RLIMIT_STACK: 3,
  RLIMIT_CORE: 4,
  RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7,
  RLIMIT_MEMLOCK: 8,
  RLIMIT_AS: 9,
  RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11,
  RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13,
  RLIMIT_RTPRIO: 14,
  RLIMIT_RTTIME: 15,
};
const PROPAGATIONS = [
  "",
  "private",
  "rprivate",
  "slave",
  "rslave",
  "shared",
  "rshared",
  "unbindable",
  "runbindable",
];

/** Reads `<bundle>/config.json` and validates it; throws SpecError naming the file and every problem. */
export function loadSpec(bundle: string): Spec {
  const path = join(bundle, "config.json");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SpecError(
      "spec_missing",
      code === "ENOENT"
        ? `${path} does not exist: a bundle needs a config.json (make one with "vessel-runc spec")`
        : `cannot read ${path}: ${(err as Error).message}`,
      { path },
      err,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SpecError("spec_json", `${path} is not valid JSON: ${(err as Error).message}`, { path }, err);
  }
  return validateSpec(json, { bundle, source: path });
}

/**
 * Checks a parsed config against the parts of the runtime spec Vessel relies on and returns it
 * typed. Every problem is collected so that one run shows them all.
 */
export function validateSpec(json: unknown, where: { bundle?: string; source?: string } = {}): Spec {
  const problems: string[] = [];
  const bad = (msg: string) => problems.push(msg);
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new SpecError("spec_invalid", `${where.source ?? "config"}: the config must be a JSON object`, {
      problems: ["not an object"],
    });
  }
  const spec = json as Spec;
  if (typeof spec.ociVersion !== "string" || spec.ociVersion === "")
    bad(`"ociVersion" is required (e.g. "1.0.2")`);
  if (!spec.root || typeof spec.root.path !== "string" || spec.root.path === "")
    bad(`"root.path" is required`);
  else if (where.bundle !== undefined) {
    const rootfs = resolve(where.bundle, spec.root.path);
    const st = statSync(rootfs, { throwIfNoEntry: false });
    if (st === undefined) bad(`root.path "${spec.root.path}" does not exist (resolved to ${rootfs})`);
    else if (!st.isDirectory()) bad(`root.path "${spec.root.path}" is not a directory`);
  }
  const p = spec.process;
  if (p !== undefined) {
    if (!Array.isArray(p.args) || p.args.length === 0) bad(`"process.args" must name a program to run`);
    else if (p.args.some((a) => typeof a !== "string")) bad(`"process.args" must be strings`);
    if (typeof p.cwd !== "string" || !isAbsolute(p.cwd))
      bad(`"process.cwd" must be an absolute path, got ${JSON.stringify(p.cwd)}`);
    if (!p.user || !Number.isInteger(p.user.uid) || !Number.isInteger(p.user.gid))
      bad(`"process.user" needs integer "uid" and "gid"`);
    for (const e of p.env ?? [])
      if (typeof e !== "string" || !e.includes("="))
        bad(`"process.env" entry ${JSON.stringify(e)} is not KEY=value`);
    for (const [set, names] of Object.entries(p.capabilities ?? {})) {
      if (!["bounding", "effective", "inheritable", "permitted", "ambient"].includes(set))
        bad(`unknown capability set "${set}"`);
      for (const n of names ?? [])
        if (!(n in CAPABILITIES)) bad(`unknown capability "${n}" in process.capabilities.${set}`);
    }
    for (const r of p.rlimits ?? []) {
      if (!(r.type in RLIMITS)) bad(`unknown rlimit type "${r.type}"`);
      if (!Number.isInteger(r.soft) || !Number.isInteger(r.hard) || r.soft > r.hard)
        bad(`rlimit ${r.type}: soft (${r.soft}) and hard (${r.hard}) must be integers with soft <= hard`);
    }
    if (
      p.oomScoreAdj !== undefined &&
      (!Number.isInteger(p.oomScoreAdj) || p.oomScoreAdj < -1000 || p.oomScoreAdj > 1000)
    )
      bad(`"process.oomScoreAdj" must be an integer in [-1000, 1000], got ${p.oomScoreAdj}`);
  }
  for (const [i, m] of (spec.mounts ?? []).entries()) {
    if (typeof m.destination !== "string" || m.destination === "") bad(`mounts[${i}] needs a "destination"`);
    else if (!m.destination.startsWith("/"))
      bad(`mounts[${i}].destination "${m.destination}" must be absolute`);
    if (m.options !== undefined && !Array.isArray(m.options))
      bad(`mounts[${i}].options must be an array of strings`);
  }
  for (const [name, hooks] of Object.entries(spec.hooks ?? {})) {
    if (!HOOK_NAMES.includes(name as HookName)) bad(`unknown hook "${name}"`);
    for (const h of hooks ?? [])
      if (typeof h.path !== "string" || !isAbsolute(h.path))
        bad(`hooks.${name}: path "${h.path}" must be absolute`);
  }
  const l = spec.linux;
  if (l !== undefined) {
    const seen = new Set<string>();
    for (const ns of l.namespaces ?? []) {
      if (!NAMESPACES.includes(ns.type)) bad(`unknown namespace type "${ns.type}"`);
      if (seen.has(ns.type)) bad(`namespace "${ns.type}" is listed twice`);
      seen.add(ns.type);
      if (ns.path !== undefined && !isAbsolute(ns.path))
        bad(`namespace ${ns.type}: path "${ns.path}" must be absolute`);
    }
    if ((l.uidMappings?.length || l.gidMappings?.length) && !seen.has("user"))
      bad(`uid/gid mappings need a "user" namespace in linux.namespaces`);
    if (
      seen.has("user") &&
      !l.namespaces?.find((n) => n.type === "user")?.path &&
      !(l.uidMappings?.length && l.gidMappings?.length)
    )
      bad(`a new "user" namespace needs linux.uidMappings and linux.gidMappings`);
    for (const m of [...(l.uidMappings ?? []), ...(l.gidMappings ?? [])])
      if (![m.containerID, m.hostID, m.size].every((v) => Number.isInteger(v) && v >= 0) || m.size === 0)
        bad(`id mapping ${JSON.stringify(m)} needs non-negative integers and a size > 0`);
    if (l.rootfsPropagation !== undefined && !PROPAGATIONS.includes(l.rootfsPropagation))
      bad(
        `linux.rootfsPropagation "${l.rootfsPropagation}" is not one of ${PROPAGATIONS.filter(Boolean).join(", ")}`,
      );
    for (const d of l.devices ?? []) {
      if (!["c", "b", "u", "p"].includes(d.type))
        bad(`device ${d.path}: type "${d.type}" is not c, b, u or p`);
      if (typeof d.path !== "string" || !d.path.startsWith("/dev/"))
        bad(`device path "${d.path}" must be under /dev`);
      if (d.type !== "p" && (!Number.isInteger(d.major) || !Number.isInteger(d.minor)))
        bad(`device ${d.path} needs major and minor`);
    }
    for (const key of Object.keys(l.sysctl ?? {})) {
      const err = sysctlProblem(key, seen);
      if (err) bad(err);
    }
    if (l.seccomp !== undefined) {
      const s = l.seccomp;
      if (!SECCOMP_ACTIONS.includes(s.defaultAction))
        bad(`seccomp defaultAction "${s.defaultAction}" is unknown`);
      for (const a of s.architectures ?? [])
        if (!SECCOMP_ARCHES.includes(a)) bad(`seccomp architecture "${a}" is not supported`);
      for (const [i, r] of (s.syscalls ?? []).entries()) {
        if (!Array.isArray(r.names) || r.names.length === 0) bad(`seccomp.syscalls[${i}] needs "names"`);
        if (!SECCOMP_ACTIONS.includes(r.action))
          bad(`seccomp.syscalls[${i}]: action "${r.action}" is unknown`);
        for (const a of r.args ?? []) {
          if (!Number.isInteger(a.index) || a.index < 0 || a.index > 5)
            bad(`seccomp.syscalls[${i}]: arg index ${a.index} is not 0..5`);
          if (!SECCOMP_OPS.includes(a.op)) bad(`seccomp.syscalls[${i}]: operator "${a.op}" is unknown`);
        }
      }
    }
    if (l.cgroupsPath !== undefined && typeof l.cgroupsPath !== "string")
      bad(`linux.cgroupsPath must be a string`);
    if (spec.hostname && !seen.has("uts")) bad(`"hostname" needs a "uts" namespace of its own`);
  }
  if (problems.length > 0) {
    const head = where.source ? `${where.source}: ` : "";
    throw new SpecError("spec_invalid", `${head}invalid config: ${problems.join("; ")}`, { problems });
  }
  return spec;
}

/** runc's rule (libcontainer/configs/validate): a sysctl must belong to a namespace the container owns. */
function sysctlProblem(key: string, ns: Set<string>): string | undefined {
  const ipc = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
  ];
  if (ipc.includes(key) || key.startsWith("fs.mqueue."))
    return ns.has("ipc") ? undefined : `sysctl "${key}" needs an ipc namespace`;
  if (key.startsWith("net."))
    return ns.has("network") ? undefined : `sysctl "${key}" needs a network namespace`;
  if (key === "kernel.hostname" || key === "kernel.domainname")
    return ns.has("uts") ? undefined : `sysctl "${key}" needs a uts namespace`;
  return `sysctl "${key}" is not namespaced: setting it would change the host`;
}
