import { statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { capMask } from "./capabilities.js";
import type { CgroupMount, CgroupRecord } from "./cgroups.js";
import { ContainerError } from "./errors.js";
import { compileSeccomp, encodeProgram } from "./seccomp.js";
import { type Hook, type Mount, type NamespaceType, type Process, RLIMITS, type Spec } from "./spec.js";

/**
 * The plan: what the helper (native/nsexec) does, in order, computed here from the spec. The
 * helper runs `pre` in itself, clones with `cloneFlags`, runs `post` in itself (the child's
 * /proc entries are named "{pid}"), and runs `child` in the clone, whose last op is `exec`.
 * Every policy decision (which mounts, which order, which flags) is made in this file.
 */
export type Op = (string | Buffer)[];
export interface Plan {
  cloneFlags: number;
  /** the helper waits for the child and exits with its status (foreground run/exec) */
  wait: boolean;
  pre: Op[];
  post: Op[];
  child: Op[];
}

// include/uapi/linux/sched.h
export const CLONE = {
  NEWTIME: 0x00000080,
  NEWNS: 0x00020000,
  NEWCGROUP: 0x02000000,
  NEWUTS: 0x04000000,
  NEWIPC: 0x08000000,
  NEWUSER: 0x10000000,
  NEWPID: 0x20000000,
  NEWNET: 0x40000000,
} as const;

export const NS_FLAG: Record<NamespaceType, number> = {
  pid: CLONE.NEWPID,
  network: CLONE.NEWNET,
  mount: CLONE.NEWNS,
  ipc: CLONE.NEWIPC,
  uts: CLONE.NEWUTS,
  user: CLONE.NEWUSER,
  cgroup: CLONE.NEWCGROUP,
  time: CLONE.NEWTIME,
};
/** /proc/<pid>/ns/<name> for each namespace type */
export const NS_PROC: Record<NamespaceType, string> = {
  pid: "pid",
  network: "net",
  mount: "mnt",
  ipc: "ipc",
  uts: "uts",
  user: "user",
  cgroup: "cgroup",
  time: "time",
};
/** setns order: the user namespace first (it owns the others), mount last but one, cgroup last */
const JOIN_ORDER: NamespaceType[] = ["user", "ipc", "uts", "network", "pid", "time", "mount", "cgroup"];

// include/uapi/linux/mount.h
export const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  SYNCHRONOUS: 16,
  REMOUNT: 32,
  MANDLOCK: 64,
  DIRSYNC: 128,
  NOSYMFOLLOW: 256,
  NOATIME: 1024,
  NODIRATIME: 2048,
  BIND: 4096,
  MOVE: 8192,
  REC: 16384,
  SILENT: 32768,
  UNBINDABLE: 1 << 17,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
  RELATIME: 1 << 21,
  STRICTATIME: 1 << 24,
  LAZYTIME: 1 << 25,
} as const;

const FLAG_OPTIONS: Record<string, [set: boolean, flag: number]> = {
  ro: [true, MS.RDONLY],
  rw: [false, MS.RDONLY],
  nosuid: [true, MS.NOSUID],
  suid: [false, MS.NOSUID],
  nodev: [true, MS.NODEV],
  dev: [false, MS.NODEV],
  noexec: [true, MS.NOEXEC],
  exec: [false, MS.NOEXEC],
  sync: [true, MS.SYNCHRONOUS],
  async: [false, MS.SYNCHRONOUS],
  mand: [true, MS.MANDLOCK],
  nomand: [false, MS.MANDLOCK],
  dirsync: [true, MS.DIRSYNC],
  noatime: [true, MS.NOATIME],
  atime: [false, MS.NOATIME],
  nodiratime: [true, MS.NODIRATIME],
  diratime: [false, MS.NODIRATIME],
  relatime: [true, MS.RELATIME],
  norelatime: [false, MS.RELATIME],
  strictatime: [true, MS.STRICTATIME],
  nostrictatime: [false, MS.STRICTATIME],
  lazytime: [true, MS.LAZYTIME],
  nolazytime: [false, MS.LAZYTIME],
  nosymfollow: [true, MS.NOSYMFOLLOW],
  symfollow: [false, MS.NOSYMFOLLOW],
  bind: [true, MS.BIND],
  rbind: [true, MS.BIND | MS.REC],
  remount: [true, MS.REMOUNT],
};
export const PROPAGATION_OPTIONS = [
  "private",
  "rprivate",
  "shared",
  "rshared",
  "slave",
  "rslave",
  "unbindable",
  "runbindable",
];
const PROPAGATION: Record<string, number> = {
  private: MS.PRIVATE,
  rprivate: MS.PRIVATE | MS.REC,
  shared: MS.SHARED,
  rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE,
  rslave: MS.SLAVE | MS.REC,
  unbindable: MS.UNBINDABLE,
  runbindable: MS.UNBINDABLE | MS.REC,
};
/** options for other layers (podman's relabel and copy-up hints), not for mount(2) */
const IGNORED_OPTIONS = new Set([
  "z",
  "Z",
  "tmpcopyup",
  "notmpcopyup",
  "copy",
  "nocopy",
  "U",
  "idmap",
  "ridmap",
  "O",
]);

export interface ParsedMountOptions {
  flags: number;
  propagation: number;
  data: string;
}

/** Splits OCI mount options into mount(2) flags, a propagation change, and filesystem data. */
export function parseMountOptions(options: readonly string[] | undefined): ParsedMountOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options ?? []) {
    const f = FLAG_OPTIONS[o];
    if (f) {
      flags = f[0] ? flags | f[1] : flags & ~f[1];
      continue;
    }
    const p = PROPAGATION[o];
    if (p !== undefined) {
      propagation |= p;
      continue;
    }
    if (IGNORED_OPTIONS.has(o)) continue;
    data.push(o);
  }
  return { flags, propagation, data: data.join(",") };
}

const rel = (dest: string) => dest.replace(/^\/+/, "");
const hex = (n: bigint) => `0x${n.toString(16)}`;

export interface CreatePlanInput {
  spec: Spec;
  bundle: string;
  rootfs: string;
  /** exec fifo path in the state directory (create); absent for `run` without create/start split */
  fifo?: string;
  consoleSocket?: string;
  cgroup: CgroupRecord;
  /** v1/v2 hierarchies of the host, to expand a "cgroup" mount */
  cgroupMounts: readonly CgroupMount[];
  noPivot: boolean;
  noNewKeyring: boolean;
  preserveFds: number;
  wait: boolean;
  /** the capabilities the runtime holds; requests are masked with it */
  availableCaps: bigint;
  /** which sync points the runtime wants (the hook phases it runs itself) */
  syncCreateRuntime: boolean;
  /** state JSON handed to hooks that run inside the container (createContainer, startContainer) */
  hookState: string;
  /** cgroup v2: the eBPF device filter (device_filter.ts) to attach to the container's cgroup */
  deviceFilter?: Buffer;
}

function hookOps(hooks: readonly Hook[] | undefined, state: string): Op[] {
  return (hooks ?? []).map((h) => {
    const args = h.args ?? [h.path];
    const env = h.env ?? [];
    return [
      "hook",
      h.path,
      String(h.timeout ?? 0),
      state,
      String(args.length),
      String(env.length),
      ...args,
      ...env,
    ];
  });
}

/** The default device nodes every container gets (runtime spec config-linux.md "Default Devices"). */
const DEFAULT_DEVICES = [
  { path: "/dev/null", major: 1, minor: 3 },
  { path: "/dev/zero", major: 1, minor: 5 },
  { path: "/dev/full", major: 1, minor: 7 },
  { path: "/dev/random", major: 1, minor: 8 },
  { path: "/dev/urandom", major: 1, minor: 9 },
  { path: "/dev/tty", major: 5, minor: 0 },
];

function mountOps(m: Mount, input: CreatePlanInput, hasNetns: boolean, hasCgroupns: boolean): Op[] {
  const o = parseMountOptions(m.options);
  const dest = rel(m.destination);
  const ops: Op[] = [];
  const type = m.type ?? "";
  const isBind = type === "bind" || (o.flags & MS.BIND) !== 0;
  const propagate = () => {
    if (o.propagation) ops.push(["mountin", dest, "d", "", "", String(o.propagation), ""]);
  };
  if (isBind) {
    const src = m.source && !isAbsolute(m.source) ? resolve(input.bundle, m.source) : (m.source ?? "");
    let kind = "d";
    try {
      kind = statSync(src).isDirectory() ? "d" : "f";
    } catch (err) {
      throw new ContainerError(
        "mount_source",
        `bind mount source "${src}" for ${m.destination} does not exist`,
        { src },
        err,
      );
    }
    const base = MS.BIND | (o.flags & MS.REC);
    ops.push(["mountin", dest, kind, src, "", String(base), ""]);
    // flags on a bind mount take effect only on a remount (mount(2), "Creating a bind mount")
    const extra = o.flags & ~(MS.BIND | MS.REC | MS.REMOUNT);
    if (extra) ops.push(["mountin", dest, kind, "", "", String(MS.BIND | MS.REMOUNT | extra), ""]);
    if (o.propagation) ops.push(["mountin", dest, kind, "", "", String(o.propagation), ""]);
    return ops;
  }
  if (type === "cgroup") return cgroupMountOps(dest, o, input, hasCgroupns);
  if (type === "sysfs" && !hasNetns) {
    // sysfs can only be mounted fresh from a network namespace of one's own; share the host's read-only
    ops.push(["mountin", dest, "d", "/sys", "", String(MS.BIND | MS.REC), ""]);
    ops.push([
      "mountin",
      dest,
      "d",
      "",
      "",
      String(MS.BIND | MS.REMOUNT | MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC),
      "",
    ]);
    return ops;
  }
  ops.push(["mountin", dest, "d", m.source ?? type, type, String(o.flags & ~MS.REMOUNT), o.data]);
  propagate();
  return ops;
}

/**
 * A mount of type "cgroup" (what podman asks for at /sys/fs/cgroup). On v1: a tmpfs with each
 * hierarchy's directory of this container bind-mounted at its usual name (runc does the same);
 * on v2 with a cgroup namespace: a fresh cgroup2 mount, else a bind of the container's cgroup.
 */
function cgroupMountOps(
  dest: string,
  o: ParsedMountOptions,
  input: CreatePlanInput,
  hasCgroupns: boolean,
): Op[] {
  const ro = o.flags & MS.RDONLY;
  const flags = MS.NOSUID | MS.NODEV | MS.NOEXEC;
  const ops: Op[] = [];
  if (input.cgroup.version === 2) {
    if (hasCgroupns) ops.push(["mountin", dest, "d", "cgroup2", "cgroup2", String(flags | ro), ""]);
    else {
      ops.push(["mountin", dest, "d", input.cgroup.paths.unified ?? "", "", String(MS.BIND), ""]);
      if (ro) ops.push(["mountin", dest, "d", "", "", String(MS.BIND | MS.REMOUNT | flags | ro), ""]);
    }
    return ops;
  }
  ops.push(["mountin", dest, "d", "tmpfs", "tmpfs", String(flags), "mode=755"]);
  for (const h of input.cgroupMounts) {
    if (h.version !== 1 || h.controllers.length === 0) continue;
    const first = h.controllers[0]!;
    const src = input.cgroup.paths[first];
    if (!src) continue;
    const name = h.mountpoint.split("/").pop()!;
    const target = `${dest}/${name}`;
    ops.push(["mountin", target, "d", src, "", String(MS.BIND), ""]);
    ops.push(["mountin", target, "d", "", "", String(MS.BIND | MS.REMOUNT | flags | ro), ""]);
  }
  if (ro) ops.push(["mountin", dest, "d", "", "", String(MS.REMOUNT | flags | MS.RDONLY), "mode=755"]);
  return ops;
}

/** Ops that turn the runtime's credentials into the process's (user, caps, seccomp) and exec it. */
function processOps(
  p: Process,
  spec: Spec,
  input: { availableCaps: bigint; preserveFds: number },
): { before: Op[]; after: Op[] } {
  const ops: Op[] = [];
  const after: Op[] = [];
  const caps = p.capabilities ?? {};
  const avail = input.availableCaps;
  const bounding = capMask(caps.bounding) & avail;
  const permitted = capMask(caps.permitted) & avail & bounding;
  const effective = capMask(caps.effective) & permitted;
  const inheritable = capMask(caps.inheritable) & avail & bounding;
  const ambient = capMask(caps.ambient) & permitted & inheritable;
  const seccomp = spec.linux?.seccomp ? compileSeccomp(spec.linux.seccomp) : undefined;
  const nnp = p.noNewPrivileges === true;

  for (const r of p.rlimits ?? [])
    ops.push(["rlimit", String(RLIMITS[r.type]), String(r.soft), String(r.hard)]);
  // the bounding set can only shrink while CAP_SETPCAP is effective, so before the user changes
  ops.push(["bounding", hex(bounding)]);
  ops.push(["keepcaps"]);
  ops.push(["setgroups", ...(p.user.additionalGids ?? []).map(String)]);
  ops.push(["setgid", String(p.user.gid)]);
  ops.push(["setuid", String(p.user.uid)]);
  ops.push(["umask", String(p.user.umask ?? 0o022)]);
  ops.push(["chdir", p.cwd]);
  if (seccomp && !nnp) {
    // without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while still held
    ops.push(["caps", hex(avail), hex(avail), hex(inheritable)]);
    ops.push(["seccomp", String(seccomp.flags), encodeProgram(seccomp.program)]);
  }
  ops.push(["caps", hex(effective), hex(permitted), hex(inheritable)]);
  if (ambient) ops.push(["ambient", hex(ambient)]);
  const args = p.args ?? [];
  const env = p.env ?? [];
  ops.push(["lookup", args[0] ?? "", String(env.length), ...env]);
  // after `start`: only what must be last (runc's standard_init does the rest before the fifo)
  if (nnp) after.push(["nnp"]);
  if (seccomp && nnp) after.push(["seccomp", String(seccomp.flags), encodeProgram(seccomp.program)]);
  after.push(["cloexec", String(3 + input.preserveFds)]);
  after.push(["exec", String(args.length), String(env.length), ...args, ...env]);
  return { before: ops, after };
}

function idMap(m: { containerID: number; hostID: number; size: number }[] | undefined): string {
  return (m ?? []).map((x) => `${x.containerID} ${x.hostID} ${x.size}\n`).join("");
}

/** The plan for `create` (and `run`): a new container from its spec. */
export function buildCreatePlan(input: CreatePlanInput): Plan {
  const { spec } = input;
  const p = spec.process;
  if (!p?.args?.length)
    throw new ContainerError("no_process", "the spec has no process to run (process.args)");
  const namespaces = spec.linux?.namespaces ?? [];
  const has = (t: NamespaceType) => namespaces.some((n) => n.type === t);
  if (!namespaces.some((n) => n.type === "mount" && !n.path)) {
    throw new ContainerError(
      "no_mount_namespace",
      'vessel-runc needs a new "mount" namespace (linux.namespaces) to set up the root filesystem without touching the host',
    );
  }
  const pre: Op[] = [];
  const post: Op[] = [];
  const child: Op[] = [];
  let cloneFlags = 0;

  if (input.deviceFilter && input.cgroup.paths.unified)
    pre.push(["devfilter", input.cgroup.paths.unified, input.deviceFilter]);
  // opened here, by the runtime's credentials, and inherited by the child (which, in a user
  // namespace, could not open a file in the root-only state directory)
  if (input.fifo) pre.push(["mkfifo", input.fifo, String(0o622)], ["fifoopen", input.fifo]);
  if (input.consoleSocket && p.terminal) pre.push(["console", input.consoleSocket]);
  if (p.oomScoreAdj !== undefined) pre.push(["write", "/proc/self/oom_score_adj", String(p.oomScoreAdj)]);
  for (const t of JOIN_ORDER) {
    const ns = namespaces.find((n) => n.type === t);
    if (!ns) continue;
    if (ns.path) pre.push(["setns", ns.path, String(NS_FLAG[t])]);
    else cloneFlags |= NS_FLAG[t];
  }
  // The helper puts the child (not itself: it must stay out of the container's cgroups, which
  // are killed and removed as a whole) into the cgroups before letting it run; the child then
  // makes its cgroup namespace, rooted at the container's cgroup (runc's nsexec does the same).
  // clone(2) reads 0x80 as part of the exit signal, so a time namespace is unshared by the
  // helper before the clone: the child is born in it (time_namespaces(7))
  if (cloneFlags & CLONE.NEWTIME) {
    pre.push(["unshare", String(CLONE.NEWTIME)]);
    cloneFlags &= ~CLONE.NEWTIME;
  }
  const newCgroupns = (cloneFlags & CLONE.NEWCGROUP) !== 0;
  cloneFlags &= ~CLONE.NEWCGROUP;
  for (const f of cgroupProcsFiles(input.cgroup)) pre.push(["cgroup", f]);
  pre.push(["dumpable", "0"]);

  if (cloneFlags & CLONE.NEWUSER) {
    // user_namespaces(7): setgroups must be denied before an unprivileged gid_map; we are root
    // in the parent namespace, so the maps are written from here, for the child
    post.push(["write", "/proc/{pid}/uid_map", idMap(spec.linux?.uidMappings)]);
    post.push(["write", "/proc/{pid}/gid_map", idMap(spec.linux?.gidMappings)]);
  }

  // in a new user namespace the child starts as the overflow uid: become the namespace's root
  // (mapped by now) so that files it creates can be owned by a mapped id
  if (cloneFlags & CLONE.NEWUSER) child.push(["setgid", "0"], ["setuid", "0"], ["setgroups"]);
  if (newCgroupns) child.push(["unshare", String(CLONE.NEWCGROUP)]);
  const rootfs = input.rootfs;
  if (has("mount")) {
    const prop = spec.linux?.rootfsPropagation;
    child.push(["mount", "", "/", "", String(prop ? PROPAGATION[prop]! : MS.SLAVE | MS.REC), ""]);
    child.push(["mount", rootfs, rootfs, "", String(MS.BIND | MS.REC), ""]);
  }
  child.push(["rootfs", rootfs]);
  if (spec.hostname !== undefined && has("uts")) child.push(["sethostname", spec.hostname]);
  if (spec.domainname !== undefined && has("uts")) child.push(["setdomainname", spec.domainname]);
  if (!input.noNewKeyring) child.push(["keyring", "_ses.vessel"]);

  const mounts = spec.mounts ?? [];
  for (const m of mounts) child.push(...mountOps(m, input, has("network"), has("cgroup")));
  const devMounted = mounts.some((m) => m.destination === "/dev");
  if (devMounted) {
    const devices = [
      ...DEFAULT_DEVICES.map((d) => ({ ...d, type: "c" as const, fileMode: 0o666, uid: 0, gid: 0 })),
      ...(spec.linux?.devices ?? []),
    ];
    const seen = new Set<string>();
    for (const d of devices.reverse()) {
      if (seen.has(d.path)) continue;
      seen.add(d.path);
      const typeBits = d.type === "b" ? 0o060000 : d.type === "p" ? 0o010000 : 0o020000;
      const mode = typeBits | ((d.fileMode ?? 0o666) & 0o7777);
      child.push([
        "device",
        rel(d.path),
        String(mode),
        String(d.major ?? 0),
        String(d.minor ?? 0),
        String(d.uid ?? 0),
        String(d.gid ?? 0),
        d.type === "p" ? "" : d.path,
      ]);
    }
    child.push(["symlink", "/proc/self/fd", "dev/fd"]);
    child.push(["symlink", "/proc/self/fd/0", "dev/stdin"]);
    child.push(["symlink", "/proc/self/fd/1", "dev/stdout"]);
    child.push(["symlink", "/proc/self/fd/2", "dev/stderr"]);
    if (mounts.some((m) => m.destination === "/dev/pts")) child.push(["symlink", "pts/ptmx", "dev/ptmx"]);
  }
  if (input.syncCreateRuntime) child.push(["sync", "createRuntime"]);
  child.push(...hookOps(spec.hooks?.createContainer, input.hookState));
  if (has("mount")) child.push([input.noPivot ? "chroot" : "pivot", rootfs]);
  else child.push(["chroot", rootfs]);
  for (const [k, v] of Object.entries(spec.linux?.sysctl ?? {}))
    child.push(["write", `/proc/sys/${k.replace(/\./g, "/")}`, v]);
  for (const path of spec.linux?.maskedPaths ?? []) child.push(["maskpath", path]);
  for (const path of spec.linux?.readonlyPaths ?? []) child.push(["readonly", path]);
  if (spec.root?.readonly) child.push(["mount", "", "/", "", String(MS.BIND | MS.REMOUNT | MS.RDONLY), ""]);
  // A terminal without a console socket is only possible in the foreground (runc's rule); there
  // the process gets the caller's stdio (runc would proxy a pty of its own instead).
  checkTerminal(p, input);
  if (p.terminal && input.consoleSocket)
    child.push(p.consoleSize ? ["pty", String(p.consoleSize.height), String(p.consoleSize.width)] : ["pty"]);
  else child.push(["setsid"]);
  const persona = personalityOf(spec);
  if (persona !== undefined) child.push(["personality", String(persona)]);
  const proc = processOps(p, spec, input);
  child.push(...proc.before);
  child.push(["ready"]);
  if (input.fifo) child.push(["fifowait"]);
  child.push(...hookOps(spec.hooks?.startContainer, input.hookState));
  child.push(...proc.after);
  return { cloneFlags, wait: input.wait, pre, post, child };
}

function checkTerminal(p: Process, input: { consoleSocket?: string; wait: boolean }): void {
  if (p.terminal && !input.consoleSocket && !input.wait) {
    throw new ContainerError(
      "no_console_socket",
      "cannot allocate tty if vessel-runc will detach without setting console socket (--console-socket)",
    );
  }
}

/** linux.personality (config-linux.md "Personality"): the execution domain for personality(2). */
function personalityOf(spec: Spec): number | undefined {
  const p = spec.linux?.personality;
  if (p === undefined) return undefined;
  switch (p.domain) {
    case "LINUX":
      return 0x0000;
    case "LINUX32":
      return 0x0008;
    default:
      throw new ContainerError(
        "personality",
        `linux.personality.domain "${p.domain}" is not LINUX or LINUX32`,
      );
  }
}

export function cgroupProcsFiles(r: CgroupRecord): string[] {
  return [...new Set(Object.values(r.paths))].map((d) => join(d, "cgroup.procs"));
}

export interface ExecPlanInput {
  /** host pid of the container's init */
  initPid: number;
  spec: Spec;
  process: Process;
  cgroup: CgroupRecord;
  consoleSocket?: string;
  preserveFds: number;
  wait: boolean;
  availableCaps: bigint;
}

/** The plan for `exec`: join the init's namespaces and cgroups, then run one more process. */
export function buildExecPlan(input: ExecPlanInput): Plan {
  const p = input.process;
  if (!p.args?.length) throw new ContainerError("no_process", "exec needs a command (process.args)");
  const pre: Op[] = [];
  const child: Op[] = [];
  if (input.consoleSocket && p.terminal) pre.push(["console", input.consoleSocket]);
  if (p.oomScoreAdj !== undefined) pre.push(["write", "/proc/self/oom_score_adj", String(p.oomScoreAdj)]);
  // opened before the setns calls, written with the child's pid after the clone
  for (const f of cgroupProcsFiles(input.cgroup)) pre.push(["cgroup", f]);
  const namespaces = input.spec.linux?.namespaces ?? [];
  for (const t of JOIN_ORDER) {
    if (!namespaces.some((n) => n.type === t)) continue;
    pre.push(["setns", `/proc/${input.initPid}/ns/${NS_PROC[t]}`, String(NS_FLAG[t])]);
  }
  pre.push(["dumpable", "0"]);
  checkTerminal(p, input);
  // exec-pty: the exec'd process's own pty, not bound on the container's /dev/console
  if (p.terminal && input.consoleSocket)
    child.push(
      p.consoleSize ? ["exec-pty", String(p.consoleSize.height), String(p.consoleSize.width)] : ["exec-pty"],
    );
  else child.push(["setsid"]);
  const proc = processOps(p, input.spec, input);
  child.push(...proc.before, ["ready"], ...proc.after);
  return { cloneFlags: 0, wait: input.wait, pre, post: [], child };
}

/** Serializes a plan for the helper: u32 length, flags, wait, then the three op lists. */
export function encodePlan(plan: Plan): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n >>> 0);
    parts.push(b);
  };
  u32(plan.cloneFlags);
  u32(plan.wait ? 1 : 0);
  for (const list of [plan.pre, plan.post, plan.child]) {
    u32(list.length);
    for (const op of list) {
      u32(op.length);
      for (const a of op) {
        const b = typeof a === "string" ? Buffer.from(a) : a;
        u32(b.length);
        parts.push(b);
      }
    }
  }
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length);
  return Buffer.concat([head, body]);
}
