import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { DEBUG_EXIT_PORT } from "../memory/layout.js";
import { cacheRoot, type GuestArch, type Progress } from "./default_guest.js";
import { type ChrootMethod, HOST_I386_ENV, planChrootExec, runInChroot } from "./foreign_exec.js";
import { GuestError } from "./guest_error.js";
import { CMD_PARAM } from "./init_script.js";
import { type AptSource, hostDebianSources } from "./private_apt.js";
import { runStreaming, type StreamingResult } from "./run_streaming.js";

/**
 * A Debian root filesystem as a raw ext4 disk image, for `vessel vm run --disk`:
 * `debootstrap --variant=minbase` into a directory, a few files written for Vessel, then
 * `mke2fs -t ext4 -d <dir>` (e2fsprogs copies the tree into the new filesystem, no loop mount).
 * Cached under ${XDG_CACHE_HOME:-~/.cache}/vessel/rootfs/debian-<arch>/:
 *   debs/                    debootstrap's package cache (--cache-dir), so a rebuild downloads nothing
 *   root/                    the debootstrapped tree (kept: a new ROOTFS_FORMAT only reconfigures it)
 *   debootstrap.json         written when debootstrap succeeded: suite, mirror, packages, and how its
 *                            second stage ran the tree's programs (natively or under QEMU)
 *   binfmt/                  while a second stage runs under QEMU: its binfmt_misc interpreter link
 *   debian-<arch>.ext4       the image, sparse
 *   rootfs.json              manifest, written last: its presence (with this ROOTFS_FORMAT) means done
 *
 * Init: no systemd and no sysvinit. /sbin/init is /sbin/vessel-init, a dash script written below
 * (vesselInitScript): mount the kernel filesystems, set the hostname, run the `vessel.cmd` command
 * and report its status on the debug-exit port, or give root a shell on the console (no login, no
 * password), and power off through magic SysRq. On the software engine every process started
 * costs emulated milliseconds; systemd's ~20 units would take minutes where this takes two forks.
 * Installing systemd-sysv (or sysvinit-core) in the guest replaces /sbin/init with a real one;
 * the initramfs switches to whatever /sbin/init (or init=) is.
 */

/** Version of what Vessel writes into the tree and how the image is made; a change rebuilds caches. */
export const ROOTFS_FORMAT = 1;

/** The filesystem label (`mke2fs -L`); `root=LABEL=vessel-root` finds the disk by it. */
export const ROOTFS_LABEL = "vessel-root";

/** Default image size: minbase is ~150 MB once apt's caches are removed; the rest is free space. */
export const DEFAULT_ROOTFS_SIZE = 1024 * 1024 * 1024;

/**
 * Packages on top of minbase (Priority: required + apt): `ip` for the virtio-net interface, `ps`
 * and friends, and /etc/services and /etc/protocols. Each is small and has no daemon. Not
 * ifupdown: vessel-init configures nothing at boot, and `ip` is what a test or a user types.
 */
export const ROOTFS_PACKAGES = ["iproute2", "procps", "netbase"] as const;

/** The kernel command-line words that boot the image as the first virtio disk. */
export const ROOT_CMDLINE = "root=/dev/vda rw";

/** Printed by vessel-init when it starts: the Debian root is running. */
export const ROOTFS_MARKER_TEXT = "vessel: Debian root filesystem, /sbin/vessel-init";

export const ROOTFS_HOSTNAME = "vessel";

export interface RootfsPaths {
  dir: string;
  tree: string;
  debs: string;
  image: string;
  debootstrapStamp: string;
  manifest: string;
}

export interface RootfsImage {
  arch: GuestArch;
  /** The raw ext4 image. */
  image: string;
  /** Its apparent size (the file is sparse). */
  sizeBytes: number;
  suite: string;
  /** Kernel command-line words that mount it as / (add them to the default guest's). */
  cmdline: string;
}

export interface RootfsManifest {
  format: number;
  arch: GuestArch;
  suite: string;
  mirror: string;
  packages: string[];
  sizeBytes: number;
  /** Bytes the image really occupies on the host. */
  allocatedBytes: number;
  treeBytes: number;
  debootstrapSeconds: number;
  /** How debootstrap's second stage ran the tree's programs (absent in trees made before it was recorded). */
  secondStage?: SecondStageRecord;
  builtAt: string;
  buildSeconds: number;
}

export interface SecondStageRecord {
  method: ChrootMethod;
  /** `uname -m` in the chroot: x86_64 when the kernel ran the i386 code, i686 under qemu-i386. */
  machine: string;
  /** The sentence said on the console: which way and why. */
  how: string;
}

interface DebootstrapStamp {
  suite: string;
  mirror: string;
  packages: string[];
  seconds: number;
  secondStage?: SecondStageRecord;
}

export function rootfsPaths(arch: GuestArch, root = cacheRoot()): RootfsPaths {
  const dir = join(root, "rootfs", `debian-${arch}`);
  return {
    dir,
    tree: join(dir, "root"),
    debs: join(dir, "debs"),
    image: join(dir, `debian-${arch}.ext4`),
    debootstrapStamp: join(dir, "debootstrap.json"),
    manifest: join(dir, "rootfs.json"),
  };
}

/** "1G", "512M", "1536MiB", "2g", or bytes -> bytes. At least 64 MiB, at most 1 TiB. */
export function parseImageSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (m === null) {
    throw new GuestError("GUEST_BAD_SIZE", `image size "${text}" is not like 1G or 512M`, { text });
  }
  const unit = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase()] ?? 1;
  const bytes = Math.floor(Number(m[1]) * unit);
  if (bytes < 64 * 2 ** 20 || bytes > 2 ** 40) {
    throw new GuestError("GUEST_BAD_SIZE", `image size "${text}" must be between 64M and 1T`, { text });
  }
  return bytes;
}

/**
 * The mirror debootstrap uses: the host's main Debian suite (not -updates or -security, which
 * debootstrap cannot bootstrap from), or VESSEL_DEBIAN_MIRROR / VESSEL_DEBIAN_SUITE (see
 * private_apt.ts hostDebianSources).
 */
export function debootstrapSource(sources: readonly AptSource[] = hostDebianSources()): AptSource {
  const main = sources.find((s) => !s.suite.includes("-") && !/security/.test(s.uri));
  return main ?? { uri: "http://deb.debian.org/debian", suite: "bookworm" };
}

/**
 * The command line of debootstrap's first stage (without the program name): download and unpack
 * only (--foreign), which runs nothing of the new tree; the second stage, which runs the tree's
 * own dpkg and maintainer scripts, is `chroot <tree> /debootstrap/debootstrap --second-stage`
 * (SECOND_STAGE), run where the tree's code can execute (foreign_exec.ts).
 */
export function debootstrapArgs(arch: GuestArch, source: AptSource, tree: string, debs: string): string[] {
  return [
    "--foreign",
    `--arch=${arch}`,
    "--variant=minbase",
    `--include=${ROOTFS_PACKAGES.join(",")}`,
    `--cache-dir=${debs}`,
    source.suite,
    tree,
    source.uri,
  ];
}

/** debootstrap's second stage, run in the chroot of the first stage's tree. */
export const SECOND_STAGE = ["/debootstrap/debootstrap", "--second-stage"] as const;

/** The mke2fs command line that makes `image` (created sparse) from `tree`. */
export function mke2fsArgs(tree: string, image: string, sizeBytes: number): string[] {
  return [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-L",
    ROOTFS_LABEL,
    "-d",
    tree,
    // Everything belongs to root in the tree already; -d copies owners and modes as they are.
    image,
    `${Math.floor(sizeBytes / 1024)}k`,
  ];
}

export interface RootFile {
  /** Path inside the root, without a leading slash. */
  path: string;
  text: string;
  mode: number;
}

/**
 * /sbin/vessel-init, PID 1 of the Debian root (dash). The command protocol is the initramfs's
 * (init_script.ts): `vessel.cmd=<base64>` on the kernel command line, its exit status written to
 * DEBUG_EXIT_PORT+1 through /dev/port, which stops the VM with that status.
 */
export function vesselInitScript(): string {
  const status = DEBUG_EXIT_PORT + 1;
  return `#!/bin/sh
# Vessel's init for the Debian root filesystem, generated by src/guest/rootfs_image.ts.
# No service manager: mount what the kernel provides, run one command or a root shell, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux LANG=C.UTF-8
cd /
# The initramfs moves /dev, /proc and /sys here before switch_root; booted without it, mount them.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
mountpoint -q /run || mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run
mountpoint -q /tmp || mount -t tmpfs -o nosuid,nodev tmpfs /tmp
mkdir -p /run/lock
cat /etc/hostname > /proc/sys/kernel/hostname
ip link set lo up 2>/dev/null
echo "${ROOTFS_MARKER_TEXT}: Debian $(cat /etc/debian_version), $(uname -r)"

# The console's terminal (the last of /dev/console's devices: ttyS0, or hvc0 with console=hvc0).
tty=/dev/$(sed 's/.* //' /sys/class/tty/console/active 2>/dev/null)
[ -c "$tty" ] || tty=/dev/console

# Write one byte (0-255) to an I/O port through /dev/port.
outb() {
  printf "\\\\$(printf %o "$2")" | dd of=/dev/port bs=1 seek="$1" count=1 conv=notrunc 2>/dev/null
}
# Wait until the console has sent its output (tcsetattr TCSADRAIN; see init_script.ts).
drain() {
  stty -F "$tty" "$(stty -F "$tty" -g)" 2>/dev/null
}
# No poweroff(8) without a service manager: the kernel powers off through magic SysRq 'o'.
off() {
  sync
  drain
  echo o > /proc/sysrq-trigger
  sleep 5
}

cmd=
for word in $(cat /proc/cmdline); do
  case "$word" in ${CMD_PARAM}=*) cmd="\${word#${CMD_PARAM}=}" ;; esac
done

if [ -n "$cmd" ]; then
  script="$(echo "$cmd" | base64 -d)"
  setsid -c -w sh -c "$script" <>"$tty" >&0 2>&1
  rc=$?
  sync
  drain
  # The exit status on port ${status} (0x${status.toString(16)}) stops the VM with it.
  outb ${status} "$rc"
else
  echo "Vessel Debian guest: root shell on $tty; 'exit' powers off, or Ctrl-A x leaves."
  setsid -c -w bash -l <>"$tty" >&0 2>&1
fi
off
`;
}

/** The files Vessel writes into the debootstrapped tree (and the symlink /sbin/init). */
export function rootfsConfigFiles(hostname = ROOTFS_HOSTNAME): RootFile[] {
  return [
    { path: "etc/hostname", text: `${hostname}\n`, mode: 0o644 },
    {
      path: "etc/hosts",
      text: `127.0.0.1\tlocalhost\n127.0.1.1\t${hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
      mode: 0o644,
    },
    {
      // fs_passno 0: nothing runs fsck at boot (vessel-init has no fsck step; the initramfs
      // mounts / directly). errors=remount-ro as Debian's installer writes it.
      path: "etc/fstab",
      text: `# written by Vessel (src/guest/rootfs_image.ts): the first virtio disk is /\n/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t0\n`,
      mode: 0o644,
    },
    { path: "etc/resolv.conf", text: "", mode: 0o644 },
    { path: "sbin/vessel-init", text: vesselInitScript(), mode: 0o755 },
  ];
}

/** Empties root's password field in a shadow file's text ("root:*:..." -> "root::..."). */
export function rootWithoutPassword(shadow: string): string {
  return shadow.replace(/^root:[^:]*:/m, "root::");
}

/**
 * The host path of `path` inside `tree`, following symlinks of its directories as a chroot would
 * (an absolute link target is taken inside the tree). The last component is not followed: a file
 * written there replaces a symlink instead of writing through it, so nothing outside the tree is
 * ever touched (merged-/usr trees have sbin -> usr/sbin; a host could have made etc/resolv.conf a
 * link to /run/...).
 */
export function pathInTree(tree: string, path: string): string {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  const last = parts.pop();
  if (last === undefined || last === "..") throw new Error(`bad path in tree: ${path}`);
  const dir: string[] = [];
  let hops = 0;
  while (parts.length > 0) {
    const p = parts.shift()!;
    if (p === "..") {
      dir.pop();
      continue;
    }
    const host = join(tree, ...dir, p);
    let target: string | undefined;
    try {
      target = lstatSync(host).isSymbolicLink() ? readlinkSync(host) : undefined;
    } catch {
      target = undefined; // does not exist yet: mkdir creates it
    }
    if (target === undefined) {
      dir.push(p);
      continue;
    }
    if (++hops > 40) throw new Error(`too many symlinks resolving ${path} in ${tree}`);
    if (target.startsWith("/")) dir.length = 0;
    parts.unshift(...target.split("/").filter((x) => x !== "" && x !== "."));
  }
  return join(tree, ...dir, last);
}

/** Writes Vessel's files into a debootstrapped tree and removes what the image does not need. */
export function configureTree(tree: string, hostname = ROOTFS_HOSTNAME): void {
  for (const f of rootfsConfigFiles(hostname)) {
    const path = pathInTree(tree, f.path);
    mkdirSync(dirname(path), { recursive: true });
    rmSync(path, { force: true });
    writeFileSync(path, f.text);
    chmodSync(path, f.mode);
  }
  const init = pathInTree(tree, "sbin/init");
  rmSync(init, { force: true });
  symlinkSync("vessel-init", init);
  const shadow = pathInTree(tree, "etc/shadow");
  if (existsSync(shadow)) writeFileSync(shadow, rootWithoutPassword(readFileSync(shadow, "utf8")));
  // apt's downloaded packages and lists: ~85 MB that `apt update` in the guest fetches again.
  for (const dir of ["var/cache/apt/archives", "var/lib/apt/lists"]) {
    const d = join(tree, dir);
    if (!existsSync(d)) continue;
    for (const f of readdirSync(d)) {
      if (f !== "partial" && f !== "lock") rmSync(join(d, f), { recursive: true, force: true });
    }
  }
  for (const f of ["var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"])
    rmSync(join(tree, f), { force: true });
}

/** The directories searched for host tools: PATH and the sbin directories (a non-root PATH often lacks them). */
function toolDirs(): string[] {
  return [...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/sbin", "/sbin"];
}

function findTool(name: string, dirs: readonly string[]): string | undefined {
  for (const d of dirs) {
    if (d !== "" && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

const TOOL_PACKAGES: Record<string, string> = {
  debootstrap: "debootstrap",
  mke2fs: "e2fsprogs",
  chroot: "coreutils",
};

/** The path of a host tool, or a GUEST_TOOL_MISSING error naming the Debian package to install. */
export function requireTool(name: string, dirs: readonly string[] = toolDirs()): string {
  const path = findTool(name, dirs);
  if (path === undefined) {
    throw new GuestError(
      "GUEST_TOOL_MISSING",
      `${name} is not installed: the Debian root filesystem needs it (apt-get install ${TOOL_PACKAGES[name] ?? name})`,
      { tool: name, package: TOOL_PACKAGES[name] },
    );
  }
  return path;
}

/** Total bytes of a directory tree's regular files (what the image must hold). */
function treeBytes(dir: string): number {
  let n = 0;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) n += statSync(p).size;
    }
  };
  walk(dir);
  return n;
}

/** Checks that `uri/dists/suite/Release` answers, so an unreachable mirror is said plainly. */
async function checkMirror(source: AptSource): Promise<void> {
  if (!/^https?:/.test(source.uri)) return;
  const url = `${source.uri.replace(/\/$/, "")}/dists/${source.suite}/Release`;
  let why: string;
  try {
    const r = await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(20_000) });
    if (r.ok) return;
    why = `HTTP ${r.status}`;
  } catch (err) {
    const e = err as Error & { cause?: Error };
    why = e.cause?.message ?? e.message;
  }
  throw new GuestError(
    "GUEST_MIRROR_UNREACHABLE",
    `the Debian mirror does not answer for ${source.suite} (${url}: ${why}). Check the network, or set VESSEL_DEBIAN_MIRROR (and VESSEL_DEBIAN_SUITE) to a reachable mirror`,
    { url, why },
  );
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** The built image, or undefined if the cache holds none of this format (and size, if given). */
export function cachedRootfs(
  arch: GuestArch,
  root = cacheRoot(),
  sizeBytes?: number,
): RootfsImage | undefined {
  const p = rootfsPaths(arch, root);
  const m = readJson<RootfsManifest>(p.manifest);
  if (m === undefined || m.format !== ROOTFS_FORMAT || m.arch !== arch || !existsSync(p.image))
    return undefined;
  if (sizeBytes !== undefined && m.sizeBytes !== sizeBytes) return undefined;
  return { arch, image: p.image, sizeBytes: m.sizeBytes, suite: m.suite, cmdline: ROOT_CMDLINE };
}

export interface RootfsBuildOptions {
  root?: string;
  progress?: Progress;
  /** Rebuild the image (and run debootstrap again) even if the cache holds them. */
  force?: boolean;
  sizeBytes?: number;
  source?: AptSource;
}

/** The error for a failed debootstrap stage, with its last lines and its log. */
function debootstrapFailure(
  r: StreamingResult,
  arch: GuestArch,
  source: AptSource,
  tree: string,
): GuestError {
  let log = "";
  try {
    log = readFileSync(join(tree, "debootstrap/debootstrap.log"), "utf8")
      .trim()
      .split("\n")
      .slice(-8)
      .join("\n");
  } catch {
    /* no log */
  }
  const text = `${r.tail.join("\n")}\n${log}`;
  const unreachable =
    /Failed getting release file|Could not resolve|Connection (refused|timed out)|Temporary failure/.test(
      text,
    );
  const execFail = /Exec format error|cannot execute binary/.test(text);
  return new GuestError(
    unreachable ? "GUEST_MIRROR_UNREACHABLE" : "GUEST_DEBOOTSTRAP_FAILED",
    unreachable
      ? `debootstrap could not reach the Debian mirror ${source.uri}: set VESSEL_DEBIAN_MIRROR to a reachable one\n${r.tail.slice(-4).join("\n")}`
      : execFail
        ? `debootstrap could not run ${arch} binaries in the chroot, though the probe said they would run (${HOST_I386_ENV}=0 makes it use QEMU)\n${text}`
        : `debootstrap failed (status ${r.status}); the last lines:\n${text}`,
    { arch, source, status: r.status },
  );
}

const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

/**
 * Builds (or finds in the cache) the Debian root filesystem image for `arch`. Needs root
 * (debootstrap chroots into the tree and creates device nodes). The first stage only downloads
 * and unpacks; the second runs the tree's own programs in the chroot, natively where the host runs
 * them, else under QEMU user-mode emulation (foreign_exec.ts), and the console says which and why.
 */
export async function buildDebianRootfs(
  arch: GuestArch,
  options: RootfsBuildOptions = {},
): Promise<RootfsImage> {
  const started = Date.now();
  const report = options.progress ?? (() => {});
  const progress = (m: string): void =>
    report(m.startsWith("[") ? `${m} (+${((Date.now() - started) / 1000).toFixed(1)} s)` : m);
  const sizeBytes = options.sizeBytes ?? DEFAULT_ROOTFS_SIZE;
  const paths = rootfsPaths(arch, options.root);
  if (options.force !== true) {
    const cached = cachedRootfs(arch, options.root, sizeBytes);
    if (cached !== undefined) return cached;
  }
  if (process.getuid?.() !== 0) {
    throw new GuestError(
      "GUEST_ROOTFS_NOT_ROOT",
      "building the Debian root filesystem needs root: debootstrap chroots into the new tree and creates device nodes, and mke2fs -d copies root-owned files. Run it as root (sudo vessel guest build --rootfs debian)",
      {},
    );
  }
  const debootstrap = requireTool("debootstrap");
  const mke2fs = requireTool("mke2fs");
  requireTool("chroot");
  const source = options.source ?? debootstrapSource();
  const packages = [...ROOTFS_PACKAGES];
  mkdirSync(paths.dir, { recursive: true });
  rmSync(paths.manifest, { force: true });

  const stamp = readJson<DebootstrapStamp>(paths.debootstrapStamp);
  const treeUsable =
    options.force !== true &&
    stamp !== undefined &&
    stamp.suite === source.suite &&
    stamp.packages.join(",") === packages.join(",") &&
    existsSync(join(paths.tree, "etc/debian_version"));
  let debootstrapSeconds = stamp?.seconds ?? 0;
  let secondStage = stamp?.secondStage;
  if (treeUsable) {
    progress(`[1/3] debootstrap: the ${stamp.suite} tree in ${paths.tree} is already there`);
  } else {
    progress(
      `[1/3] debootstrap ${source.suite} (${arch}, minbase + ${packages.join(" ")}) from ${source.uri} into ${paths.tree}`,
    );
    // Where the tree's code will run is decided before anything is downloaded: a host that can
    // neither run i386 code nor emulate it is told what to install now, not after the first stage.
    const plan = planChrootExec(arch, paths.dir);
    progress(`      ${arch} code: ${plan.why}`);
    if (plan.kind === "unavailable") throw new GuestError("GUEST_NO_I386", plan.why, { arch });
    await checkMirror(source);
    rmSync(paths.debootstrapStamp, { force: true });
    rmSync(paths.tree, { recursive: true, force: true });
    mkdirSync(paths.debs, { recursive: true });
    const t0 = Date.now();
    progress("      first stage: download and unpack (--foreign: nothing of the tree runs yet)");
    const first = await runStreaming(
      debootstrap,
      debootstrapArgs(arch, source, paths.tree, paths.debs),
      progress,
      "      ",
    );
    if (first.status !== 0) throw debootstrapFailure(first, arch, source, paths.tree);
    progress(`      second stage: chroot ${paths.tree} ${SECOND_STAGE.join(" ")}`);
    const second = await runInChroot(plan, paths.tree, [...SECOND_STAGE], {
      arch,
      progress,
      prefix: "      ",
      workDir: paths.dir,
    });
    if (second.status !== 0) throw debootstrapFailure(second, arch, source, paths.tree);
    debootstrapSeconds = (Date.now() - t0) / 1000;
    secondStage = { method: second.method, machine: second.machine, how: second.how };
    const s: DebootstrapStamp = {
      suite: source.suite,
      mirror: source.uri,
      packages,
      seconds: debootstrapSeconds,
      secondStage,
    };
    writeFileSync(paths.debootstrapStamp, `${JSON.stringify(s, null, 2)}\n`);
    progress(
      `      debootstrap took ${debootstrapSeconds.toFixed(1)} s (second stage: ${second.method}, uname -m ${second.machine})`,
    );
  }

  progress(
    "[2/3] configuring the tree for Vessel (hostname, fstab, /sbin/init -> vessel-init, root without password)",
  );
  configureTree(paths.tree);
  const bytes = treeBytes(paths.tree);
  // Room for the inode tables, the journal (64 MiB from 1 GiB up) and a little to write.
  const needed = bytes * 1.15 + (sizeBytes >= 2 ** 30 ? 64 * 2 ** 20 : 16 * 2 ** 20);
  if (needed > sizeBytes) {
    throw new GuestError(
      "GUEST_ROOTFS_TOO_SMALL",
      `the tree holds ${mb(bytes)}: an image of ${mb(sizeBytes)} is too small for it; give --size ${Math.ceil(needed / 2 ** 30)}G or more`,
      { treeBytes: bytes, sizeBytes },
    );
  }

  progress(
    `[3/3] mke2fs -t ext4 -d ${paths.tree} (${mb(bytes)} of files) into a ${mb(sizeBytes)} sparse image`,
  );
  const tmp = `${paths.image}.tmp`;
  rmSync(tmp, { force: true });
  const r = spawnSync(mke2fs, mke2fsArgs(paths.tree, tmp, sizeBytes), { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new GuestError(
      "GUEST_MKE2FS_FAILED",
      `mke2fs -d ${paths.tree} ${tmp} failed (status ${r.status}): ${(r.stderr || r.error?.message || "").trim()}`,
      { status: r.status },
      r.error,
    );
  }
  renameSync(tmp, paths.image);
  const st = statSync(paths.image);
  const manifest: RootfsManifest = {
    format: ROOTFS_FORMAT,
    arch,
    suite: source.suite,
    mirror: source.uri,
    packages,
    sizeBytes,
    allocatedBytes: st.blocks * 512,
    treeBytes: bytes,
    debootstrapSeconds,
    ...(secondStage === undefined ? {} : { secondStage }),
    builtAt: new Date().toISOString(),
    buildSeconds: (Date.now() - started) / 1000,
  };
  writeFileSync(paths.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
  progress(
    `done in ${manifest.buildSeconds.toFixed(1)} s: ${paths.image} (${mb(sizeBytes)} apparent, ${mb(manifest.allocatedBytes)} allocated)`,
  );
  return { arch, image: paths.image, sizeBytes, suite: source.suite, cmdline: ROOT_CMDLINE };
}

/**
 * The Debian root filesystem image for `arch`, built first if the cache does not hold it (the CLI,
 * the REST API and `vessel vm run` call this). Boot it with the default guest's kernel and
 * initramfs and `cmdline` (ROOT_CMDLINE) added to the kernel command line.
 */
export async function ensureDebianRootfs(
  arch: GuestArch,
  progress?: Progress,
  options: Omit<RootfsBuildOptions, "progress" | "force"> = {},
): Promise<RootfsImage> {
  const cached = cachedRootfs(arch, options.root, options.sizeBytes);
  if (cached !== undefined) return cached;
  progress?.(
    `vessel: building the Debian ${arch} root filesystem image (first run only; debootstrap takes a few minutes)`,
  );
  return buildDebianRootfs(arch, progress === undefined ? options : { ...options, progress });
}
