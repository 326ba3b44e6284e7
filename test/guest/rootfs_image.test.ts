import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { GuestError } from "../../src/guest/guest_error.js";
import { CMD_PARAM } from "../../src/guest/init_script.js";
import {
  buildDebianRootfs,
  cachedRootfs,
  configureTree,
  debootstrapArgs,
  debootstrapSource,
  mke2fsArgs,
  parseImageSize,
  pathInTree,
  ROOT_CMDLINE,
  ROOTFS_LABEL,
  ROOTFS_PACKAGES,
  requireTool,
  rootfsConfigFiles,
  rootfsPaths,
  rootWithoutPassword,
  SECOND_STAGE,
  vesselInitScript,
} from "../../src/guest/rootfs_image.js";

test("image sizes are read with binary units and bounded", () => {
  assert.equal(parseImageSize("1G"), 2 ** 30);
  assert.equal(parseImageSize("512M"), 512 * 2 ** 20);
  assert.equal(parseImageSize("1536MiB"), 1536 * 2 ** 20);
  assert.equal(parseImageSize("2g"), 2 * 2 ** 30);
  assert.equal(parseImageSize("1.5G"), 1.5 * 2 ** 30);
  assert.throws(() => parseImageSize("big"), /not like 1G/);
  assert.throws(() => parseImageSize("1M"), /between 64M and 1T/);
  assert.throws(() => parseImageSize("2T"), /between 64M and 1T/);
});

test("debootstrap uses the host's main suite, not -updates or -security", () => {
  const s = debootstrapSource([
    { uri: "http://deb.debian.org/debian-security", suite: "bookworm-security" },
    { uri: "http://mirror.example/debian", suite: "bookworm-updates" },
    { uri: "http://mirror.example/debian", suite: "bookworm" },
  ]);
  assert.deepEqual(s, { uri: "http://mirror.example/debian", suite: "bookworm" });
  assert.deepEqual(debootstrapSource([]), { uri: "http://deb.debian.org/debian", suite: "bookworm" });
});

test("the debootstrap and mke2fs command lines: a first stage of minbase for the arch, then the second in the chroot, ext4 labelled vessel-root from the tree", () => {
  const a = debootstrapArgs("i386", { uri: "http://m/debian", suite: "bookworm" }, "/c/root", "/c/debs");
  assert.deepEqual(a, [
    "--foreign", // the second stage runs in the chroot, where i386 code runs (foreign_exec.ts)
    "--arch=i386",
    "--variant=minbase",
    `--include=${ROOTFS_PACKAGES.join(",")}`,
    "--cache-dir=/c/debs",
    "bookworm",
    "/c/root",
    "http://m/debian",
  ]);
  assert.deepEqual([...SECOND_STAGE], ["/debootstrap/debootstrap", "--second-stage"]);
  const m = mke2fsArgs("/c/root", "/c/img", 2 ** 30);
  assert.deepEqual(m, ["-q", "-F", "-t", "ext4", "-L", ROOTFS_LABEL, "-d", "/c/root", "/c/img", "1048576k"]);
  assert.equal(ROOT_CMDLINE, "root=/dev/vda rw");
});

test("the cache layout is rootfs/debian-<arch>/ with the image named debian-<arch>.ext4", () => {
  const p = rootfsPaths("i386", "/cache/vessel");
  assert.equal(p.dir, "/cache/vessel/rootfs/debian-i386");
  assert.equal(p.image, "/cache/vessel/rootfs/debian-i386/debian-i386.ext4");
  assert.equal(p.tree, "/cache/vessel/rootfs/debian-i386/root");
  assert.equal(cachedRootfs("i386", "/nonexistent/vessel"), undefined);
});

test("the files written for Vessel: hostname, hosts, fstab with /dev/vda as /, and vessel-init", () => {
  const files = new Map(rootfsConfigFiles("box").map((f) => [f.path, f]));
  assert.equal(files.get("etc/hostname")?.text, "box\n");
  assert.match(files.get("etc/hosts")!.text, /^127\.0\.1\.1\tbox$/m);
  const fstab = files
    .get("etc/fstab")!
    .text.split("\n")
    .filter((l) => l !== "" && !l.startsWith("#"));
  assert.deepEqual(fstab, ["/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t0"]);
  assert.equal(files.get("sbin/vessel-init")?.mode, 0o755);
  assert.equal(files.get("sbin/vessel-init")?.text, vesselInitScript());
});

test("vessel-init is valid sh, runs vessel.cmd on the console's tty and reports the status on the debug-exit port", () => {
  const text = vesselInitScript();
  for (const sh of ["sh", "dash", "busybox"]) {
    const args = sh === "busybox" ? ["sh", "-n"] : ["-n"];
    const r = spawnSync(sh, args, { input: text, encoding: "utf8" });
    if (r.error) continue; // that shell is not installed
    assert.equal(r.status, 0, `${sh}: ${r.stderr}`);
  }
  assert.match(text, new RegExp(`${CMD_PARAM.replace(".", "\\.")}=\\*\\)`));
  assert.match(text, /setsid -c -w sh -c "\$script" <>"\$tty" >&0 2>&1/);
  assert.match(text, /outb 245 "\$rc"/);
  assert.match(text, /echo o > \/proc\/sysrq-trigger/);
  assert.match(text, /setsid -c -w bash -l/);
  assert.match(text, /mountpoint -q \/proc \|\| mount -t proc proc \/proc/);
});

test("root's password field is emptied, other lines are kept", () => {
  const shadow = "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n";
  assert.equal(rootWithoutPassword(shadow), "root::20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n");
});

test("paths are resolved inside the tree: absolute and relative directory links never lead out of it", () => {
  const tree = mkdtempSync(join(tmpdir(), "vessel-tree-"));
  try {
    mkdirSync(join(tree, "usr/sbin"), { recursive: true });
    symlinkSync("usr/sbin", join(tree, "sbin"));
    symlinkSync("/usr/lib", join(tree, "lib")); // absolute: must stay in the tree
    symlinkSync("../../..", join(tree, "usr/up"));
    assert.equal(pathInTree(tree, "sbin/init"), join(tree, "usr/sbin/init"));
    assert.equal(pathInTree(tree, "/lib/x/y"), join(tree, "usr/lib/x/y"));
    assert.equal(pathInTree(tree, "usr/up/etc/passwd"), join(tree, "etc/passwd"));
    assert.equal(pathInTree(tree, "../../etc/passwd"), join(tree, "etc/passwd"));
    assert.equal(pathInTree(tree, "sbin"), join(tree, "sbin")); // the last component is not followed
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
});

test("configuring a tree writes Vessel's files, links /sbin/init to vessel-init, empties apt's caches and writes nothing outside", () => {
  const tree = mkdtempSync(join(tmpdir(), "vessel-tree-"));
  const outside = mkdtempSync(join(tmpdir(), "vessel-outside-"));
  try {
    writeFileSync(join(outside, "resolv.conf"), "nameserver 192.0.2.1\n");
    for (const d of ["usr/sbin", "etc", "var/cache/apt/archives/partial", "var/lib/apt/lists/partial"])
      mkdirSync(join(tree, d), { recursive: true });
    symlinkSync("usr/sbin", join(tree, "sbin"));
    symlinkSync(join(outside, "resolv.conf"), join(tree, "etc/resolv.conf"));
    writeFileSync(join(tree, "etc/shadow"), "root:*:20000:0:99999:7:::\n");
    writeFileSync(join(tree, "var/cache/apt/archives/libc6_2.36_i386.deb"), "x");
    writeFileSync(
      join(tree, "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-i386_Packages"),
      "x",
    );
    writeFileSync(join(tree, "var/cache/apt/pkgcache.bin"), "x");
    configureTree(tree);
    assert.equal(readFileSync(join(outside, "resolv.conf"), "utf8"), "nameserver 192.0.2.1\n");
    assert.ok(lstatSync(join(tree, "etc/resolv.conf")).isFile());
    assert.equal(readlinkSync(join(tree, "usr/sbin/init")), "vessel-init");
    assert.equal(statSync(join(tree, "usr/sbin/vessel-init")).mode & 0o777, 0o755);
    assert.equal(readFileSync(join(tree, "etc/hostname"), "utf8"), "vessel\n");
    assert.match(readFileSync(join(tree, "etc/shadow"), "utf8"), /^root::/);
    assert.ok(existsSync(join(tree, "var/cache/apt/archives/partial")));
    assert.ok(!existsSync(join(tree, "var/cache/apt/archives/libc6_2.36_i386.deb")));
    assert.ok(!existsSync(join(tree, "var/cache/apt/pkgcache.bin")));
    assert.deepEqual(
      readFileSync(join(tree, "etc/fstab"), "utf8").match(/^\/dev\/vda\s+\/\s+ext4/m)?.length,
      1,
    );
    configureTree(tree); // again (a new ROOTFS_FORMAT reconfigures a kept tree): no error
  } finally {
    rmSync(tree, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  }
});

test("a missing tool is reported with the Debian package that provides it", () => {
  assert.throws(
    () => requireTool("debootstrap", ["/nonexistent"]),
    (e: unknown) =>
      e instanceof GuestError &&
      e.code === "GUEST_TOOL_MISSING" &&
      /apt-get install debootstrap/.test(e.message),
  );
  assert.throws(() => requireTool("mke2fs", ["/nonexistent"]), /apt-get install e2fsprogs/);
});

test("building the root filesystem as another user than root says that root is needed", async () => {
  const root = mkdtempSync(join(tmpdir(), "vessel-cache-"));
  const getuid = process.getuid;
  process.getuid = () => 1000;
  try {
    await assert.rejects(
      buildDebianRootfs("i386", { root }),
      (e: unknown) =>
        e instanceof GuestError && e.code === "GUEST_ROOTFS_NOT_ROOT" && /needs root/.test(e.message),
    );
  } finally {
    if (getuid !== undefined) process.getuid = getuid;
    rmSync(root, { recursive: true, force: true });
  }
});

test("an unreachable mirror is reported with its address before debootstrap starts", async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("the root check comes first: run as root to reach the mirror check");
    return;
  }
  try {
    requireTool("debootstrap");
    requireTool("mke2fs");
  } catch (err) {
    t.skip((err as Error).message);
    return;
  }
  const root = mkdtempSync(join(tmpdir(), "vessel-cache-"));
  try {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    await assert.rejects(
      buildDebianRootfs("i386", { root, source: { uri: "http://127.0.0.1:9/debian", suite: "bookworm" } }),
      (e: unknown) =>
        e instanceof GuestError &&
        e.code === "GUEST_MIRROR_UNREACHABLE" &&
        e.message.includes("http://127.0.0.1:9/debian/dists/bookworm/Release") &&
        /VESSEL_DEBIAN_MIRROR/.test(e.message),
    );
    assert.ok(!existsSync(join(rootfsPaths("i386", root).tree, "etc")));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
