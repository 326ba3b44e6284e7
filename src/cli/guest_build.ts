import { parseArgs } from "node:util";
import { UsageError } from "../errors.js";
import {
  buildDefaultGuest,
  cachedGuest,
  type GuestArch,
  guestPaths,
  parseGuestArch,
} from "../guest/default_guest.js";
import {
  buildDebianRootfs,
  cachedRootfs,
  DEFAULT_ROOTFS_SIZE,
  parseImageSize,
} from "../guest/rootfs_image.js";

const HELP = `usage: vessel guest build [--arch amd64|i386] [--force] [--rootfs debian [--size SIZE]]

Builds the default guest: Debian's kernel package and busybox-static, downloaded with apt-get on
a private apt state (the host's apt configuration is not touched), and an initramfs written by
Vessel. Cached under \${XDG_CACHE_HOME:-~/.cache}/vessel/guest/<arch>/.

With --rootfs debian, also a Debian root filesystem as a raw ext4 disk image (debootstrap
--variant=minbase, then mke2fs -d; needs root, debootstrap and e2fsprogs), cached under
\${XDG_CACHE_HOME:-~/.cache}/vessel/rootfs/debian-<arch>/. Its /sbin/init is Vessel's small init
(no systemd): a root shell on the console, or the command given to vessel vm run. Boot it with
the default guest and root=/dev/vda on the kernel command line. The VM writes to this image:
copy it (cp --sparse=always) to keep the cached one pristine. debootstrap's second stage runs the
new tree's programs in a chroot: natively where this host runs i386 code, else under QEMU's
user-mode emulator (qemu-i386-static, from qemu-user-static) through binfmt_misc; the build says
which and why.

  --arch amd64|i386   guest architecture (default amd64; i386 is the 686 kernel for --engine soft)
  --force             rebuild even if the cache holds a guest (with --rootfs: only the root
                      filesystem, debootstrap included)
  --rootfs debian     build the Debian root filesystem image too
  --size SIZE         the image's size, e.g. 1G, 512M (default 1G; the file is sparse)
  Environment: VESSEL_DEBIAN_MIRROR, VESSEL_DEBIAN_SUITE (default: the host's Debian mirror);
  VESSEL_HOST_I386=0 treats this host as unable to run i386 code (QEMU is used), =1 as able
`;

export async function run(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (err) {
    throw new UsageError("USAGE", `${(err as Error).message}\n${HELP}`);
  }
  if (parsed.values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.positionals.length > 0)
    throw new UsageError("USAGE", `unexpected argument "${parsed.positionals[0]}"\n${HELP}`);
  let arch: GuestArch;
  try {
    arch = parseGuestArch(parsed.values.arch ?? "amd64");
  } catch (err) {
    throw new UsageError("USAGE", (err as Error).message);
  }
  const rootfs = parsed.values.rootfs;
  if (rootfs !== undefined && rootfs !== "debian")
    throw new UsageError("USAGE", `--rootfs "${rootfs}": the only root filesystem is "debian"\n${HELP}`);
  if (parsed.values.size !== undefined && rootfs === undefined)
    throw new UsageError("USAGE", `--size is the --rootfs image's size: give --rootfs debian\n${HELP}`);
  let sizeBytes = DEFAULT_ROOTFS_SIZE;
  if (parsed.values.size !== undefined) {
    try {
      sizeBytes = parseImageSize(parsed.values.size);
    } catch (err) {
      throw new UsageError("USAGE", (err as Error).message);
    }
  }
  const progress = (m: string): void => {
    process.stderr.write(`${m}\n`);
  };
  // With --rootfs, --force rebuilds the root filesystem; the default guest is built if missing.
  const forceGuest = parsed.values.force === true && rootfs === undefined;
  const cached = cachedGuest(arch);
  if (cached !== undefined && !forceGuest) {
    progress(`the ${arch} guest is already built in ${guestPaths(arch).dir} (--force rebuilds it)`);
  } else {
    buildDefaultGuest(arch, { progress, force: true });
  }
  const g = cachedGuest(arch)!;
  if (rootfs === undefined) {
    process.stdout.write(`kernel  ${g.kernel}\ninitrd  ${g.initrd}\ncmdline ${g.cmdline}\n`);
    return 0;
  }
  const had = cachedRootfs(arch, undefined, sizeBytes);
  if (had !== undefined && parsed.values.force !== true) {
    progress(`the Debian ${arch} root filesystem is already built: ${had.image} (--force rebuilds it)`);
  }
  const image = await buildDebianRootfs(arch, {
    progress,
    sizeBytes,
    ...(parsed.values.force === true ? { force: true } : {}),
  });
  process.stdout.write(
    `kernel  ${g.kernel}\ninitrd  ${g.initrd}\ndisk    ${image.image}\ncmdline ${g.cmdline} ${image.cmdline}\n`,
  );
  return 0;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      arch: { type: "string" },
      force: { type: "boolean" },
      rootfs: { type: "string" },
      size: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    strict: true,
  });
}
