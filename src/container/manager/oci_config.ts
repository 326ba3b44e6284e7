import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../../errors.js";
import type { ContainerConfig } from "./state.js";

/**
 * The OCI runtime config (runtime-spec config.md, config-linux.md) for one managed container:
 * the defaults docker and podman use (capabilities, mounts, masked paths, device cgroup rules)
 * plus what `run`'s flags ask for. Written to `bundle/config.json` and handed to the runtime.
 */

/** Docker's default capability set (moby oci/caps/defaults.go). */
export const DEFAULT_CAPS = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

const MASKED = [
  "/proc/asound",
  "/proc/acpi",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
];
const READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

export interface User {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

/** Resolves `name|uid[:group|gid]` against the image's /etc/passwd and /etc/group. */
export function resolveUser(rootfs: string, spec: string): User {
  const read = (f: string) => {
    try {
      return readFileSync(join(rootfs, "etc", f), "utf8")
        .split("\n")
        .filter((l) => l !== "" && !l.startsWith("#"))
        .map((l) => l.split(":"));
    } catch {
      return [];
    }
  };
  const passwd = read("passwd");
  const group = read("group");
  const [u, g] = (spec === "" ? "0" : spec).split(":") as [string, string | undefined];
  let uid: number;
  let gid: number | undefined;
  let home = "/";
  let userName: string | undefined;
  const byName = passwd.find((p) => p[0] === u);
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    const entry = passwd.find((p) => p[2] === u);
    if (entry) {
      gid = Number(entry[3]);
      home = entry[5] ?? "/";
      userName = entry[0];
    } else gid = uid === 0 ? 0 : uid;
  } else if (byName) {
    uid = Number(byName[2]);
    gid = Number(byName[3]);
    home = byName[5] ?? "/";
    userName = byName[0];
  } else {
    throw new UsageError(
      "BAD_USER",
      `unable to find user "${u}": no matching entry in the image's /etc/passwd`,
      { user: spec },
    );
  }
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const entry = group.find((e) => e[0] === g);
      if (!entry)
        throw new UsageError("BAD_USER", `unable to find group "${g}" in the image's /etc/group`, {
          user: spec,
        });
      gid = Number(entry[2]);
    }
  }
  const additionalGids =
    userName === undefined
      ? []
      : group
          .filter((e) => (e[3] ?? "").split(",").includes(userName!))
          .map((e) => Number(e[2]))
          .filter((x) => x !== gid);
  if (uid === 0 && home === "/") home = "/root";
  return { uid, gid: gid ?? 0, additionalGids, home };
}

export interface OciConfigInput {
  cfg: ContainerConfig;
  rootfs: string;
  /** Path of the network namespace to join, or undefined for the host's. */
  netnsPath?: string;
  /** Files the manager writes per container and binds in: /etc/hosts, /etc/hostname, /etc/resolv.conf. */
  etcFiles: { hosts: string; hostname: string; resolv: string };
  volumeSources: string[];
  /**
   * Whether the runtime allocates a pty for `-t` (runc's foreground run does; the library runtime
   * does through a console socket the manager proxies). When it does not,
   * the container inherits the caller's terminal as its stdio instead.
   */
  runtimeTerminal: boolean;
  /** The pty's initial size (the caller's terminal), with a runtime terminal. */
  consoleSize?: { height: number; width: number };
}

export function cgroupsPath(id: string): string {
  return `/vessel/${id}`;
}

export function buildOciConfig(input: OciConfigInput): Record<string, unknown> {
  const { cfg } = input;
  const user = resolveUser(input.rootfs, cfg.user);
  const env = [...cfg.env];
  if (!env.some((e) => e.startsWith("HOME="))) env.push(`HOME=${user.home}`);
  if (!env.some((e) => e.startsWith("HOSTNAME="))) env.push(`HOSTNAME=${cfg.hostname}`);
  if (cfg.tty && !env.some((e) => e.startsWith("TERM="))) env.push("TERM=xterm");
  const bind = (source: string, destination: string, ro: boolean) => ({
    destination,
    type: "bind",
    source,
    options: ["rbind", "rprivate", ...(ro ? ["ro"] : ["rw"])],
  });
  const mounts: Record<string, unknown>[] = [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    {
      destination: "/dev",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
      destination: "/dev/pts",
      type: "devpts",
      source: "devpts",
      options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    bind(input.etcFiles.hosts, "/etc/hosts", false),
    bind(input.etcFiles.hostname, "/etc/hostname", false),
    bind(input.etcFiles.resolv, "/etc/resolv.conf", false),
  ];
  if (cfg.readOnly)
    mounts.push({
      destination: "/tmp",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "nodev", "mode=1777"],
    });
  cfg.volumes.forEach((v, i) => {
    mounts.push(bind(input.volumeSources[i]!, v.target, v.readonly));
  });
  const namespaces: Record<string, string>[] = [
    { type: "pid" },
    { type: "ipc" },
    { type: "uts" },
    { type: "mount" },
  ];
  if (input.netnsPath !== undefined) namespaces.push({ type: "network", path: input.netnsPath });
  const resources: Record<string, unknown> = {
    devices: [
      { allow: false, access: "rwm" },
      ...[
        [1, 3],
        [1, 5],
        [1, 7],
        [1, 8],
        [1, 9],
        [5, 0],
        [5, 1],
        [5, 2],
        [136, -1],
      ].map(([major, minor]) => ({
        allow: true,
        type: "c",
        major,
        ...(minor! >= 0 ? { minor } : {}),
        access: "rwm",
      })),
    ],
  };
  if (cfg.memory !== undefined) {
    const swapOk =
      existsSync("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") ||
      existsSync("/sys/fs/cgroup/memory.swap.max");
    resources.memory = { limit: cfg.memory, ...(swapOk ? { swap: cfg.memory } : {}) };
  }
  if (cfg.cpus !== undefined) resources.cpu = { quota: Math.round(cfg.cpus * 100000), period: 100000 };
  if (cfg.pidsLimit !== undefined) resources.pids = { limit: cfg.pidsLimit };
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: cfg.tty && input.runtimeTerminal,
      ...(cfg.tty && input.runtimeTerminal && input.consoleSize ? { consoleSize: input.consoleSize } : {}),
      user: {
        uid: user.uid,
        gid: user.gid,
        ...(user.additionalGids.length ? { additionalGids: user.additionalGids } : {}),
      },
      args: cfg.args,
      env,
      cwd: cfg.cwd || "/",
      capabilities: {
        bounding: DEFAULT_CAPS,
        effective: DEFAULT_CAPS,
        permitted: DEFAULT_CAPS,
      },
      noNewPrivileges: false,
    },
    root: { path: input.rootfs, readonly: cfg.readOnly },
    hostname: cfg.hostname,
    mounts,
    linux: {
      namespaces,
      resources,
      cgroupsPath: cgroupsPath(cfg.id),
      maskedPaths: MASKED,
      readonlyPaths: READONLY,
    },
  };
}
