import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { cachedGuest, DEFAULT_CMDLINE, guestPaths } from "../../src/guest/default_guest.js";
import { GuestError } from "../../src/guest/guest_error.js";
import { guestCommandParam, USERSPACE_MARKER_TEXT } from "../../src/guest/init_script.js";
import {
  buildDebianRootfs,
  cachedRootfs,
  mke2fsArgs,
  ROOT_CMDLINE,
  ROOTFS_LABEL,
  ROOTFS_MARKER_TEXT,
  type RootfsImage,
  requireTool,
} from "../../src/guest/rootfs_image.js";
import { DEBUG_EXIT_PORT } from "../../src/memory/layout.js";
import { qemuMissing, runQemu, tscHint } from "../boot/qemu.js";

/**
 * The Debian root filesystem image end to end: built with debootstrap and mke2fs -d (the first
 * run takes about two minutes and ~150 MB from the mirror; then it is cached), checked with
 * e2fsprogs, and booted by QEMU TCG with the default i386 guest's kernel and initramfs: the
 * initramfs mounts /dev/vda and switch_roots into Debian, where /sbin/vessel-init runs the command.
 * QEMU is the reference until Vessel's soft engine attaches virtio-blk. QEMU's `-M pc` puts
 * virtio-blk on PCI (the initramfs loads virtio_pci), so pci=off is left out of the command line.
 */

const ARCH = "i386";

let built: RootfsImage | undefined;
let skipReason: string | undefined;

/** The image (built on first use), or undefined after t.skip with the reason. */
async function image(t: TestContext): Promise<RootfsImage | undefined> {
  if (built === undefined && skipReason === undefined) {
    if (process.getuid?.() !== 0) skipReason = "building the Debian image needs root (debootstrap chroots)";
    else {
      try {
        requireTool("debootstrap");
        requireTool("mke2fs");
        const wasCached = cachedRootfs(ARCH) !== undefined;
        const started = Date.now();
        built = await buildDebianRootfs(ARCH);
        t.diagnostic(
          `debootstrap + mke2fs: ${((Date.now() - started) / 1000).toFixed(1)} s (${wasCached ? "cached" : "built now"}), ${built.image}`,
        );
      } catch (err) {
        if (!(err instanceof GuestError)) throw err;
        // GUEST_NO_I386: this host neither runs i386 code nor has qemu-i386-static to emulate it.
        if (
          err.code === "GUEST_TOOL_MISSING" ||
          err.code === "GUEST_MIRROR_UNREACHABLE" ||
          err.code === "GUEST_NO_I386"
        )
          skipReason = err.message;
        else throw err;
      }
    }
  }
  if (built === undefined) t.skip(skipReason);
  return built;
}

function tool(t: TestContext, name: string, pkg: string): boolean {
  if (spawnSync(name, ["-V"]).error === undefined) return true;
  t.skip(`${name} not installed (apt-get install ${pkg})`);
  return false;
}

function debugfs(img: string, request: string): string {
  const r = spawnSync("debugfs", ["-R", request, img], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test("the Debian image is a clean ext4 filesystem labelled vessel-root, with /sbin/init -> vessel-init", async (t) => {
  if (!tool(t, "e2fsck", "e2fsprogs")) return;
  const img = await image(t);
  if (img === undefined) return;
  const fsck = spawnSync("e2fsck", ["-fn", img.image], { encoding: "utf8" });
  assert.equal(fsck.status, 0, `${fsck.stdout}\n${fsck.stderr}`);
  t.diagnostic(fsck.stdout.trim().split("\n").at(-1) ?? "");
  assert.match(debugfs(img.image, "stats"), new RegExp(`Filesystem volume name:\\s+${ROOTFS_LABEL}`));
  const root = debugfs(img.image, "ls -l /");
  for (const entry of ["usr", "etc", "dev", "proc", "sys", "root", "tmp"])
    assert.match(root, new RegExp(` ${entry}\\s*$`, "m"), root);
  assert.match(root, /^\s*\d+\s+120777 .* sbin\s*$/m, root); // merged /usr: sbin -> usr/sbin
  assert.match(debugfs(img.image, "stat /usr/sbin/init"), /Fast link dest: "vessel-init"/);
  assert.match(debugfs(img.image, "stat /usr/sbin/vessel-init"), /Mode:\s+0755/);
  assert.match(debugfs(img.image, "cat /etc/debian_version"), /^\d+\.\d+/);
  assert.match(debugfs(img.image, "cat /etc/fstab"), /^\/dev\/vda\s+\/\s+ext4/m);
  assert.match(debugfs(img.image, "cat /etc/shadow"), /^root::/m);
});

/**
 * Boots the default i386 guest with `disk` as virtio-blk and `append` added; undefined = skipped.
 * Machines: `pc` puts virtio-blk on PCI (the initramfs loads virtio_pci; pci=off is left out);
 * `microvm` on virtio-mmio described in its ACPI DSDT, the transport Vessel's machines use.
 */
async function bootWithDisk(
  t: TestContext,
  disk: string,
  append: string,
  o: { machine?: "pc" | "microvm"; readOnly?: boolean } = {},
) {
  const qemu = "qemu-system-i386";
  const noQemu = qemuMissing(qemu);
  if (noQemu !== undefined) {
    t.skip(noQemu);
    return undefined;
  }
  const guest = cachedGuest(ARCH);
  if (guest === undefined) {
    t.skip(`no ${ARCH} default guest cached: run \`node bin/vessel.js guest build --arch ${ARCH}\``);
    return undefined;
  }
  const microvm = o.machine === "microvm";
  const cmdline = microvm
    ? `${DEFAULT_CMDLINE[ARCH]} ${tscHint()}`
    : DEFAULT_CMDLINE[ARCH].replace(/ ?pci=off/, "");
  const r = await runQemu(
    [
      qemu,
      ...["-M", microvm ? "microvm,pic=on,pit=on,rtc=on" : "pc", "-accel", "tcg", "-m", "256"],
      ...["-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"],
      ...["-kernel", guest.kernel, "-initrd", guest.initrd, "-append", `${cmdline} ${append}`],
      ...["-drive", `file=${disk},if=none,id=d0,format=raw${o.readOnly === true ? ",readonly=on" : ""}`],
      ...["-device", `${microvm ? "virtio-blk-device" : "virtio-blk-pci"},drive=d0`],
      // debug-exit at +1 only: the status write ends QEMU with (status << 1) | 1.
      ...["-device", `isa-debug-exit,iobase=0x${(DEBUG_EXIT_PORT + 1).toString(16)},iosize=1`],
    ],
    Number(process.env.VESSEL_QEMU_TIMEOUT_MS ?? 240_000),
  );
  return r;
}

test("QEMU boots the Debian image through the initramfs's switch_root; the command runs in Debian and its status comes back", async (t) => {
  const img = await image(t);
  if (img === undefined) return;
  const dir = mkdtempSync(join(tmpdir(), "vessel-rootfs-"));
  try {
    // A copy: the VM writes to its disk, the cached image stays as built.
    const disk = join(dir, "disk.ext4");
    assert.equal(spawnSync("cp", ["--sparse=always", img.image, disk]).status, 0);
    const cmd = guestCommandParam([
      "sh",
      "-c",
      "cat /etc/debian_version; echo pid1=$(readlink /proc/1/exe); echo root=$(findmnt -no SOURCE,FSTYPE /); " +
        "echo written-in-debian > /root/note; exit 7",
    ]);
    const r = await bootWithDisk(t, disk, `${img.cmdline} ${cmd}`);
    if (r === undefined) return;
    t.diagnostic(`boot to the Debian command and back under QEMU TCG: ${r.ms} ms`);
    const tail = r.output.slice(-3000);
    assert.ok(r.output.includes(USERSPACE_MARKER_TEXT), tail);
    assert.match(r.output, /vessel: switching to the root filesystem on \/dev\/vda \(ext4, rw\)/, tail);
    assert.ok(r.output.includes(ROOTFS_MARKER_TEXT), tail);
    assert.match(r.output, /^\d+\.\d+\r?$/m, tail); // /etc/debian_version
    assert.match(r.output, /^pid1=\/usr\/bin\/dash\r?$/m, tail); // vessel-init, a dash script, is PID 1
    assert.match(r.output, /^root=\/dev\/vda ext4\r?$/m, tail);
    assert.equal(r.status, (7 << 1) | 1, tail);
    // What the command wrote in the Debian root is in the image (vessel-init syncs before the status).
    assert.equal(debugfs(disk, "cat /root/note"), "written-in-debian\n");
    const fsck = spawnSync("e2fsck", ["-fn", disk], { encoding: "utf8" });
    assert.equal(fsck.status, 0, fsck.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a root device that never appears ends a command with status 1 and says so, after the bounded wait", async (t) => {
  const img = await image(t);
  if (img === undefined) return;
  const r = await bootWithDisk(
    t,
    img.image,
    `root=/dev/vdb vessel.rootwait=2 ${guestCommandParam(["true"])}`,
    { readOnly: true },
  );
  if (r === undefined) return;
  const tail = r.output.slice(-2000);
  assert.match(
    r.output,
    /vessel: root device \/dev\/vdb did not appear within 2 s \(block devices: vda\)/,
    tail,
  );
  assert.equal(r.status, (1 << 1) | 1, tail);
  assert.ok(!r.output.includes(ROOTFS_MARKER_TEXT), tail);
  assert.equal(ROOT_CMDLINE.split(" ")[0], "root=/dev/vda");
});

test("on virtio-mmio (QEMU microvm, devices from ACPI) the initramfs finds the disk by its label and switches to Debian", async (t) => {
  const img = await image(t);
  if (img === undefined) return;
  const r = await bootWithDisk(
    t,
    img.image,
    `root=LABEL=${ROOTFS_LABEL} ro ${guestCommandParam(["sh", "-c", "cat /sys/bus/virtio/devices/*/modalias; findmnt -no OPTIONS / | cut -d, -f1; exit 4"])}`,
    { machine: "microvm", readOnly: true },
  );
  if (r === undefined) return;
  t.diagnostic(`microvm: boot to the Debian command and back under QEMU TCG: ${r.ms} ms`);
  const tail = r.output.slice(-3000);
  assert.match(r.output, /vessel: switching to the root filesystem on \/dev\/vda \(ext4, ro\)/, tail);
  assert.ok(r.output.includes(ROOTFS_MARKER_TEXT), tail);
  assert.match(r.output, /^virtio:d00000002v/m, tail); // virtio-blk (device id 2)
  assert.match(r.output, /^ro\r?$/m, tail);
  assert.equal(r.status, (4 << 1) | 1, tail);
});

test("a root without Vessel's init runs the command in a chroot from the initramfs and reports its status", async (t) => {
  // Needs no debootstrap: a 64 MiB ext4 holding only the i386 busybox-static of the default guest.
  if (!tool(t, "mke2fs", "e2fsprogs")) return;
  const debs = join(guestPaths(ARCH).dir, "debs");
  const deb = existsSync(debs) ? readdirSync(debs).find((f) => f.startsWith("busybox-static_")) : undefined;
  if (deb === undefined) {
    t.skip(`no ${ARCH} default guest cached: run \`node bin/vessel.js guest build --arch ${ARCH}\``);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "vessel-rootfs-"));
  try {
    const tree = join(dir, "tree");
    assert.equal(spawnSync("dpkg-deb", ["-x", join(debs, deb), tree]).status, 0);
    symlinkSync("busybox", join(tree, "bin/sh"));
    for (const d of ["dev", "proc", "sys"]) mkdirSync(join(tree, d));
    writeFileSync(join(tree, "marker"), "busybox-root\n");
    const disk = join(dir, "disk.ext4");
    const mk = spawnSync("mke2fs", mke2fsArgs(tree, disk, 64 * 2 ** 20), { encoding: "utf8" });
    assert.equal(mk.status, 0, mk.stderr);
    const r = await bootWithDisk(
      t,
      disk,
      `root=/dev/vda ${guestCommandParam(["sh", "-c", "cat /marker; ls /sbin/vessel-init || echo no-vessel-init; exit 6"])}`,
    );
    if (r === undefined) return;
    const tail = r.output.slice(-2000);
    assert.match(r.output, /^busybox-root\r?$/m, tail);
    assert.match(r.output, /^no-vessel-init\r?$/m, tail);
    assert.ok(!r.output.includes("switching to the root filesystem"), tail);
    assert.equal(r.status, (6 << 1) | 1, tail);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
