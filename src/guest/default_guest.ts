import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { CpioWriter } from "./cpio.js";
import { GuestError } from "./guest_error.js";
import { initScript } from "./init_script.js";
import { listModuleFiles, parseBuiltin, readModinfo, resolveModules } from "./kernel_modules.js";
import { type PackageInfo, PrivateApt } from "./private_apt.js";

/**
 * The default guest: Debian's kernel and busybox-static, and an initramfs written by Vessel, built
 * on first use and cached under ${XDG_CACHE_HOME:-~/.cache}/vessel/guest/<arch>/:
 *   apt/            private apt state (sources.list, lists, archives) — see private_apt.ts
 *   debs/           the downloaded packages
 *   vmlinuz         the kernel (bzImage)
 *   initramfs.cpio  newc cpio, uncompressed: the software engine would spend far longer inflating
 *                   it in emulated code than Vessel spends copying a few more MiB into guest RAM
 *   config          the kernel's build configuration (Debian's package ships only a stub
 *                   System.map; the symbols are in linux-image-*-dbg)
 *   guest.json      manifest, written last: its presence means the build is complete
 */

export type GuestArch = "amd64" | "i386";

export interface GuestPaths {
  dir: string;
  kernel: string;
  initrd: string;
  manifest: string;
}

export interface DefaultGuest {
  arch: GuestArch;
  kernel: string;
  initrd: string;
  /** The default kernel command line (without a command). */
  cmdline: string;
}

/**
 * Version of what the builder puts in the initramfs (init script, layout, modules). A cached guest
 * of another version is rebuilt, so a change here reaches users without `--force`.
 */
export const GUEST_FORMAT = 4;

export interface GuestManifest {
  format: number;
  arch: GuestArch;
  kernelPackage: string;
  kernelVersion: string;
  kernelRelease: string;
  busyboxVersion: string;
  modules: string[];
  cmdline: string;
  kernelBytes: number;
  initrdBytes: number;
  builtAt: string;
  buildSeconds: number;
}

export type Progress = (message: string) => void;

/**
 * Kernel packages (their dependency targets are the real, versioned packages):
 * - amd64: linux-image-amd64. Not the cloud flavor: linux-image-cloud-amd64 is built without
 *   CONFIG_DEVPORT, and the init reaches the debug-exit port through /dev/port.
 * - i386: linux-image-686, the non-PAE 686 flavor the software engine boots first.
 */
const KERNEL_META: Record<GuestArch, string> = { amd64: "linux-image-amd64", i386: "linux-image-686" };

/**
 * Default kernel command lines, each option chosen on purpose:
 * - console=ttyS0: the 16550 on COM1 is the console. reboot=k: reboot through the i8042.
 *   panic=-1: reboot at once on panic, so a crashed guest ends the VM instead of hanging.
 * - pci=off: the machine has no PCI bus; skip probing config space.
 * - 8250.nr_uarts=1 and the i8042.* options (as Firecracker uses them): probe only what exists.
 * i386 (the software engine's guest) adds:
 * - cryptomgr.notests: the crypto self-tests take seconds of emulated CPU and test nothing of ours.
 * - no_timer_check: without ACPI (acpi=off, PIC/PIT boot) the IOAPIC timer check waits for ticks
 *   on a slow emulated CPU and may wrongly conclude the timer is broken; with ACPI it is a no-op.
 * - nokaslr: fixed kernel addresses, so soft-engine traces match the kernel's symbols (linux-image-*-dbg) run after run.
 * Not chosen: tsc=reliable (it would hide a software TSC that disagrees with the other clocks
 * instead of letting the kernel's clocksource watchdog find it) and quiet (boot logs are how a
 * young engine is debugged; add it with --cmdline).
 */
export const DEFAULT_CMDLINE: Record<GuestArch, string> = {
  amd64: "console=ttyS0 reboot=k panic=-1 pci=off 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd",
  i386: "console=ttyS0 reboot=k panic=-1 pci=off 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd cryptomgr.notests no_timer_check nokaslr",
};

/**
 * Modules the initramfs loads; their dependencies (modinfo depends=) are added:
 * - the virtio transports and devices, and vsock. virtio_pci too: QEMU's `-M pc` reference
 *   machine has virtio on PCI (Vessel's own machines use virtio-mmio and boot with pci=off, where
 *   it loads and finds nothing).
 * - ext4, for a root filesystem on a virtio disk (root=/dev/vda; see init_script.ts). Its
 *   depends= brings jbd2, mbcache and crc16. crc32c_generic is not a modinfo dependency: ext4 and
 *   jbd2 ask the crypto API for "crc32c" (metadata_csum) at mount time, so it is listed by name.
 */
export const GUEST_MODULES = [
  "virtio",
  "virtio_ring",
  "virtio_mmio",
  "virtio_pci",
  "virtio_blk",
  "virtio_net",
  "virtio_console",
  "virtio_rng",
  "vsock",
  "vmw_vsock_virtio_transport_common",
  "vmw_vsock_virtio_transport",
  "crc32c_generic",
  "ext4",
];

export function cacheRoot(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "vessel");
}

export function guestPaths(arch: GuestArch, root = cacheRoot()): GuestPaths {
  const dir = join(root, "guest", arch);
  return {
    dir,
    kernel: join(dir, "vmlinuz"),
    initrd: join(dir, "initramfs.cpio"),
    manifest: join(dir, "guest.json"),
  };
}

/** The built guest, or undefined if it is not (completely) built. */
export function cachedGuest(arch: GuestArch, root = cacheRoot()): DefaultGuest | undefined {
  const p = guestPaths(arch, root);
  if (!existsSync(p.manifest) || !existsSync(p.kernel) || !existsSync(p.initrd)) return undefined;
  try {
    const m = JSON.parse(readFileSync(p.manifest, "utf8")) as GuestManifest;
    if (m.format !== GUEST_FORMAT) return undefined;
    // The command line is not part of the build: always today's default.
    return { arch, kernel: p.kernel, initrd: p.initrd, cmdline: DEFAULT_CMDLINE[arch] };
  } catch {
    return undefined;
  }
}

export function parseGuestArch(value: string): GuestArch {
  if (value === "amd64" || value === "x86_64") return "amd64";
  if (value === "i386" || value === "i686" || value === "x86") return "i386";
  throw new GuestError("GUEST_BAD_ARCH", `unknown guest architecture "${value}": use amd64 or i386`, {
    value,
  });
}

const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

/**
 * Unpacks a .deb like `dpkg-deb -x`; with `patterns`, only the members matching them (tar
 * --wildcards on `dpkg-deb --fsys-tarfile`), which spares writing and deleting a whole kernel's
 * module tree (hundreds of MB for amd64) when the initramfs needs a dozen modules.
 */
function unpack(deb: string, into: string, patterns?: readonly string[]): void {
  rmSync(into, { recursive: true, force: true });
  mkdirSync(into, { recursive: true });
  const r =
    patterns === undefined
      ? spawnSync("dpkg-deb", ["-x", deb, into], { encoding: "utf8" })
      : spawnSync(
          "sh",
          [
            "-c",
            'deb=$1; dir=$2; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards "$@"',
            "sh",
            deb,
            into,
            ...patterns,
          ],
          { encoding: "utf8" },
        );
  // With patterns, tar exits 2 when one matches nothing; the caller checks what it needs.
  if (r.error || (r.status !== 0 && patterns === undefined)) {
    const missing = (r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
    throw new GuestError(
      missing ? "GUEST_NO_DPKG" : "GUEST_UNPACK_FAILED",
      missing
        ? "dpkg-deb is not installed (it comes with dpkg on Debian hosts)"
        : `dpkg-deb -x ${deb} failed: ${r.stderr}`,
      { deb },
      r.error,
    );
  }
}

/**
 * Where the guest modules and everything they depend on live in Debian's 6.1 kernels (a module
 * outside these paths makes the build fall back to unpacking the whole package).
 */
const MODULE_PATTERNS = [
  "./boot/*",
  "./lib/modules/*/modules.builtin",
  "./lib/modules/*/kernel/drivers/virtio/*",
  "./lib/modules/*/kernel/drivers/block/virtio_blk.ko*",
  "./lib/modules/*/kernel/drivers/net/virtio_net.ko*",
  "./lib/modules/*/kernel/drivers/net/net_failover.ko*",
  "./lib/modules/*/kernel/net/core/*",
  "./lib/modules/*/kernel/drivers/char/virtio_console.ko*",
  "./lib/modules/*/kernel/drivers/char/hw_random/*",
  "./lib/modules/*/kernel/net/vmw_vsock/*",
  "./lib/modules/*/kernel/fs/ext4/*",
  "./lib/modules/*/kernel/fs/jbd2/*",
  "./lib/modules/*/kernel/fs/mbcache.ko*",
  "./lib/modules/*/kernel/lib/crc16.ko*",
  "./lib/modules/*/kernel/crypto/crc32c*",
];

/** Reads a module file, decompressing .ko.xz / .ko.zst / .ko.gz with the host's tools. */
function readModule(path: string): Uint8Array {
  const tool = path.endsWith(".xz")
    ? "xz"
    : path.endsWith(".zst")
      ? "zstd"
      : path.endsWith(".gz")
        ? "gzip"
        : undefined;
  if (tool === undefined) return readFileSync(path);
  const r = spawnSync(tool, ["-dc", path], { maxBuffer: 256 * 1024 * 1024 });
  if (r.error || r.status !== 0) {
    const pkg = tool === "xz" ? "xz-utils" : tool;
    const why =
      (r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT"
        ? `${tool} is not installed (apt-get install ${pkg})`
        : (r.error?.message ?? r.stderr.toString().trim());
    throw new GuestError(
      "GUEST_UNPACK_FAILED",
      `could not decompress ${path} with ${tool}: ${why}`,
      { path },
      r.error,
    );
  }
  return r.stdout;
}

/** Applet paths of a busybox binary ("bin/sh", "sbin/insmod", ...), asking the binary itself. */
function busyboxApplets(busybox: string): string[] {
  const r = spawnSync(busybox, ["--list-full"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return []; // e.g. an i386 binary on a host without IA-32 emulation
  return r.stdout
    .split("\n")
    .filter((l) => /^[a-z/]+\/[^/\s]+$/.test(l.trim()))
    .map((l) => l.trim());
}

export interface BuildOptions {
  root?: string;
  progress?: Progress;
  /** Rebuild even if the cache holds a complete guest. */
  force?: boolean;
}

/** Builds the default guest for `arch` into the cache (see the file comment); returns it. */
export function buildDefaultGuest(arch: GuestArch, options: BuildOptions = {}): DefaultGuest {
  const started = Date.now();
  const report = options.progress ?? (() => {});
  const progress = (m: string): void =>
    report(m.startsWith("[") ? `${m} (+${((Date.now() - started) / 1000).toFixed(1)} s)` : m);
  const paths = guestPaths(arch, options.root);
  mkdirSync(paths.dir, { recursive: true });

  const apt = new PrivateApt(join(paths.dir, "apt"), arch);
  progress(
    `[1/5] updating the package lists (private apt state in ${apt.root}; mirror ${apt.sources.map((s) => `${s.uri} ${s.suite}`).join(", ")})`,
  );
  for (const w of apt.update()) progress(`      apt: ${w}`);

  const meta = apt.show(KERNEL_META[arch]);
  const realName = /^([a-z0-9.+-]+)/.exec(meta.depends)?.[1];
  if (realName === undefined || !realName.startsWith("linux-image-")) {
    throw new GuestError(
      "GUEST_PACKAGE_NOT_FOUND",
      `${meta.name} ${meta.version} depends on "${meta.depends}", not a kernel image package`,
      {
        meta,
      },
    );
  }
  const kernelPkg = apt.show(realName);
  const busyboxPkg = apt.show("busybox-static");
  const pkgs: PackageInfo[] = [kernelPkg, busyboxPkg];
  const total = pkgs.reduce((n, p) => n + p.size, 0);
  progress(
    `[2/5] downloading ${pkgs.map((p) => `${p.name} ${p.version} (${mb(p.size)})`).join(", ")}: ${mb(total)} in all`,
  );
  const debsDir = join(paths.dir, "debs");
  // Keep only what this build uses; earlier kernels' packages would pile up.
  if (existsSync(debsDir)) {
    const keep = new Set(pkgs.map((p) => `${p.name}_${p.version.replace(/:/g, "%3a")}`));
    for (const f of readdirSync(debsDir))
      if (![...keep].some((k) => f.startsWith(k))) rmSync(join(debsDir, f), { force: true });
  }
  const t0 = Date.now();
  const [kernelDeb, busyboxDeb] = apt.download(pkgs, debsDir) as [string, string];
  progress(`      downloaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  progress("[3/5] unpacking with dpkg-deb -x");
  const work = join(paths.dir, "unpacked");
  const kdir = join(work, "kernel");
  const bdir = join(work, "busybox");
  unpack(kernelDeb, kdir, MODULE_PATTERNS);
  unpack(busyboxDeb, bdir);
  if (!existsSync(join(kdir, "boot"))) unpack(kernelDeb, kdir);
  const bootFiles = readdirSync(join(kdir, "boot"));
  const vmlinuz = bootFiles.find((f) => f.startsWith("vmlinuz-"));
  if (vmlinuz === undefined) {
    throw new GuestError("GUEST_BAD_PACKAGE", `${kernelPkg.name} has no /boot/vmlinuz-*`, {
      pkg: kernelPkg.name,
    });
  }
  const release = vmlinuz.slice("vmlinuz-".length);
  const modulesDir = join(kdir, "lib/modules", release);
  const busybox = join(bdir, "bin/busybox");
  if (!existsSync(busybox))
    throw new GuestError("GUEST_BAD_PACKAGE", `${busyboxPkg.name} has no /bin/busybox`, {});

  progress(`[4/5] writing the initramfs (kernel ${release})`);
  const files = listModuleFiles(modulesDir);
  let builtinText = "";
  try {
    builtinText = readFileSync(join(modulesDir, "modules.builtin"), "utf8");
  } catch {
    /* no list: treat nothing as built in */
  }
  const resolve = (available: ReadonlyMap<string, string>) =>
    resolveModules(GUEST_MODULES, available, parseBuiltin(builtinText), (_n, path) => {
      const deps = readModinfo(readModule(join(modulesDir, path))).get("depends")?.[0] ?? "";
      return deps.split(",").filter((d) => d.length > 0);
    });
  let { order, missing } = resolve(files);
  if (missing.length > 0) {
    // A module or dependency lives elsewhere in this kernel: unpack it all and resolve again.
    progress(`      ${missing.join(", ")} not under the usual paths: unpacking the whole kernel package`);
    unpack(kernelDeb, kdir);
    ({ order, missing } = resolve(listModuleFiles(modulesDir)));
  }
  if (missing.length > 0)
    progress(`      note: not in this kernel (neither module nor built-in): ${missing.join(", ")}`);

  const cpio = new CpioWriter();
  for (const d of [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc/vessel",
    "proc",
    "sys",
    "dev",
    "tmp",
    "run",
    "root",
  ])
    cpio.dir(d);
  cpio.dir("tmp", 0o1777);
  cpio.charDevice("dev/console", 5, 1);
  cpio.charDevice("dev/null", 1, 3, 0o666);
  cpio.file("bin/busybox", readFileSync(busybox), 0o755);
  const applets = busyboxApplets(busybox);
  for (const a of applets) if (a !== "bin/busybox" && !cpio.has(a)) cpio.symlink(a, "/bin/busybox");
  if (!cpio.has("bin/sh")) cpio.symlink("bin/sh", "busybox"); // the init runs --install -s then
  for (const m of order) {
    const data = readModule(join(modulesDir, m.path));
    cpio.file(`lib/modules/${release}/${m.path.replace(/\.(xz|zst|gz)$/, "")}`, data);
  }
  const plain = (p: string): string => p.replace(/\.(xz|zst|gz)$/, "");
  // modules.dep for the modules we carry, so `modprobe` works in the guest too.
  cpio.file(
    `lib/modules/${release}/modules.dep`,
    new TextEncoder().encode(
      order
        .map(
          (m) =>
            `${plain(m.path)}:${m.depends
              .map((d) => order.find((o) => o.name === d.replace(/-/g, "_")))
              .filter((o) => o !== undefined)
              .map((o) => ` ${plain(o.path)}`)
              .join("")}\n`,
        )
        .join(""),
    ),
  );
  cpio.file("etc/vessel/modules", new TextEncoder().encode(order.map((m) => `${plain(m.path)}\n`).join("")));
  cpio.file("etc/passwd", new TextEncoder().encode("root:x:0:0:root:/root:/bin/sh\n"));
  cpio.file("etc/group", new TextEncoder().encode("root:x:0:\n"));
  cpio.file("etc/hostname", new TextEncoder().encode("vessel\n"));
  cpio.file("init", new TextEncoder().encode(initScript(release)), 0o755);
  const initramfs = cpio.finish();

  progress("[5/5] writing the cache");
  const tmpInitrd = `${paths.initrd}.tmp`;
  const tmpKernel = `${paths.kernel}.tmp`;
  rmSync(paths.manifest, { force: true });
  writeFileSync(tmpInitrd, initramfs);
  copyFileSync(join(kdir, "boot", vmlinuz), tmpKernel);
  renameSync(tmpInitrd, paths.initrd);
  renameSync(tmpKernel, paths.kernel);
  for (const f of ["config"]) {
    const src = join(kdir, "boot", `${f}-${release}`);
    if (existsSync(src)) copyFileSync(src, join(paths.dir, f));
  }
  rmSync(work, { recursive: true, force: true });
  const manifest: GuestManifest = {
    format: GUEST_FORMAT,
    arch,
    kernelPackage: kernelPkg.name,
    kernelVersion: kernelPkg.version,
    kernelRelease: release,
    busyboxVersion: busyboxPkg.version,
    modules: order.map((m) => m.name),
    cmdline: DEFAULT_CMDLINE[arch],
    kernelBytes: statSync(paths.kernel).size,
    initrdBytes: initramfs.length,
    builtAt: new Date().toISOString(),
    buildSeconds: (Date.now() - started) / 1000,
  };
  writeFileSync(paths.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
  progress(
    `done in ${manifest.buildSeconds.toFixed(1)} s: ${paths.kernel} (${mb(manifest.kernelBytes)}), ${paths.initrd} (${mb(manifest.initrdBytes)}, ${applets.length} busybox applets, modules: ${manifest.modules.join(" ")})`,
  );
  return { arch, kernel: paths.kernel, initrd: paths.initrd, cmdline: manifest.cmdline };
}

/**
 * The default guest for `arch`, built first if the cache does not hold it. `vessel vm run` calls
 * this; `progress` receives one line per step (the CLI prints them on stderr).
 */
export function ensureDefaultGuest(arch: GuestArch, progress?: Progress, root?: string): DefaultGuest {
  const cached = cachedGuest(arch, root);
  if (cached !== undefined) return cached;
  progress?.(`vessel: building the default ${arch} guest (first run only)`);
  const opts: BuildOptions = {};
  if (progress !== undefined) opts.progress = progress;
  if (root !== undefined) opts.root = root;
  return buildDefaultGuest(arch, opts);
}
