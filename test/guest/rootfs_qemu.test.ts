import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { listBinfmtEntries } from "../../src/guest/binfmt_misc.js";
import { cacheRoot } from "../../src/guest/default_guest.js";
import { findProgram, HOST_I386_ENV, probeI386, QEMU_I386 } from "../../src/guest/foreign_exec.js";
import { GuestError } from "../../src/guest/guest_error.js";
import {
  buildDebianRootfs,
  cachedRootfs,
  type RootfsManifest,
  requireTool,
  rootfsPaths,
} from "../../src/guest/rootfs_image.js";

/**
 * The Debian i386 image built as on a host that cannot execute i386 code: VESSEL_HOST_I386=0 makes
 * the probe say so, and debootstrap's whole second stage (dpkg and every maintainer script of ~100
 * packages) runs under qemu-i386-static through binfmt_misc. A fresh build in a scratch cache, not
 * the cached image the other tests use (which was built whichever way this host allows); the
 * packages are hard-linked from that cache when it has them, so nothing is downloaded twice.
 * Two to four minutes: the second stage under QEMU takes 100-200 s here where natively it takes
 * ~25 s. On a host that cannot run i386 code, a cached image already built under QEMU is checked
 * instead (the override would change nothing there).
 */

/** A clean ext4 image of a tree where every package is configured, with Vessel's init. */
function checkImage(image: string, tree: string, manifest: RootfsManifest): void {
  assert.match(manifest.secondStage?.method ?? "", /^qemu-binfmt-/);
  assert.equal(manifest.secondStage?.machine, "i686"); // qemu-i386's answer; the kernel says x86_64
  const fsck = spawnSync("e2fsck", ["-fn", image], { encoding: "utf8" });
  assert.equal(fsck.status, 0, `${fsck.stdout}\n${fsck.stderr}`);
  // dpkg's database: every package "install ok installed" (the host's dpkg would call them foreign).
  const stanzas = readFileSync(join(tree, "var/lib/dpkg/status"), "utf8")
    .split("\n\n")
    .filter((x) => x.trim() !== "");
  const notConfigured = stanzas.filter((x) => !/^Status: install ok installed$/m.test(x));
  assert.deepEqual(
    notConfigured.map((x) => x.split("\n")[0]),
    [],
  );
  assert.ok(stanzas.length > 80, `${stanzas.length} packages`);
  for (const pkg of ["iproute2", "procps", "netbase", "dpkg", "libc6"])
    assert.ok(
      stanzas.some((x) => x.startsWith(`Package: ${pkg}\n`)),
      pkg,
    );
  const init = spawnSync("debugfs", ["-R", "stat /usr/sbin/init", image], { encoding: "utf8" });
  assert.match(init.stdout, /Fast link dest: "vessel-init"/);
}

test("with VESSEL_HOST_I386=0 the Debian image's second stage runs under QEMU user-mode emulation, the console says so, and the image is whole", async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("building the Debian image needs root (debootstrap chroots)");
    return;
  }
  try {
    requireTool("debootstrap");
    requireTool("mke2fs");
  } catch (err) {
    t.skip((err as Error).message);
    return;
  }
  if (findProgram(QEMU_I386) === undefined) {
    t.skip(`${QEMU_I386} not installed (apt-get install qemu-user-static)`);
    return;
  }
  // On a host that cannot run i386 code the cached image was itself built under QEMU: check it
  // rather than spend minutes building the same thing again.
  const main = rootfsPaths("i386");
  const cached = cachedRootfs("i386");
  const mainManifest =
    cached === undefined ? undefined : (JSON.parse(readFileSync(main.manifest, "utf8")) as RootfsManifest);
  const probeDir = mkdtempSync(join(cacheRoot(), "test-probe-"));
  const hostRuns = probeI386(probeDir).ran;
  rmSync(probeDir, { recursive: true, force: true });
  if (!hostRuns && cached !== undefined && /^qemu-binfmt-/.test(mainManifest?.secondStage?.method ?? "")) {
    t.diagnostic(
      `this host cannot run i386 code: the cached image was built under QEMU (${mainManifest?.secondStage?.how}); checking it`,
    );
    checkImage(cached.image, main.tree, mainManifest!);
    return;
  }
  const root = mkdtempSync(join(cacheRoot(), "test-qemu-build-"));
  const saved = process.env[HOST_I386_ENV];
  process.env[HOST_I386_ENV] = "0"; // this test file runs in a process of its own
  try {
    const paths = rootfsPaths("i386", root);
    const shared = rootfsPaths("i386").debs;
    mkdirSync(paths.debs, { recursive: true });
    if (existsSync(shared) && readdirSync(shared).length > 0)
      spawnSync("sh", ["-c", 'cp -al "$0"/. "$1"/', shared, paths.debs]);
    const lines: string[] = [];
    let img: Awaited<ReturnType<typeof buildDebianRootfs>>;
    try {
      img = await buildDebianRootfs("i386", { root, progress: (l) => lines.push(l) });
    } catch (err) {
      if (err instanceof GuestError && err.code === "GUEST_MIRROR_UNREACHABLE") {
        t.skip(err.message);
        return;
      }
      throw new Error(`${(err as Error).message}\n--- console ---\n${lines.slice(-30).join("\n")}`, {
        cause: err,
      });
    }
    const text = lines.join("\n");
    t.diagnostic(lines.filter((l) => /i386 code|checked|QEMU|second stage|took/.test(l)).join("\n"));
    assert.match(
      text,
      /i386 code: VESSEL_HOST_I386=0 says this host cannot run i386 code: .*QEMU user-mode emulation \(.*qemu-i386-static\) through binfmt_misc/,
    );
    assert.match(text, /checked: uname -m in the chroot says i686/);
    assert.match(text, /I: Base system installed successfully\./);
    const manifest = JSON.parse(readFileSync(paths.manifest, "utf8")) as RootfsManifest;
    // Nothing of Vessel's is left in the host's binfmt_misc.
    assert.deepEqual(
      listBinfmtEntries()
        .filter((e) => e.name.startsWith("vessel-"))
        .map((e) => e.name),
      [],
    );

    checkImage(img.image, paths.tree, manifest);
  } finally {
    if (saved === undefined) delete process.env[HOST_I386_ENV];
    else process.env[HOST_I386_ENV] = saved;
    rmSync(root, { recursive: true, force: true });
  }
});
