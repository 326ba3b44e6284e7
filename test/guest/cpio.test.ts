import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CpioWriter } from "../../src/guest/cpio.js";

function sample(): Uint8Array {
  return new CpioWriter()
    .dir("etc")
    .file("etc/hostname", new TextEncoder().encode("vessel\n"))
    .file("bin/busybox", new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]), 0o755)
    .symlink("bin/sh", "busybox")
    .charDevice("dev/console", 5, 1)
    .finish();
}

test("cpio newc entries have the 070701 header, names padded to 4 bytes, and a trailer", () => {
  const a = sample();
  const text = new TextDecoder("latin1").decode(a);
  assert.ok(text.startsWith("070701"));
  assert.equal(a.length % 4, 0);
  assert.ok(text.includes("TRAILER!!!\0"));
  // the first entry is "etc": namesize 4 (with NUL), header 110 + 4 = 114, padded to 116
  assert.equal(text.slice(6 + 11 * 8, 6 + 12 * 8), "00000004");
  assert.equal(text.slice(116, 122), "070701");
});

test("cpio adds missing parent directories before their children", () => {
  const w = new CpioWriter().file("lib/modules/6.1/kernel/a.ko", new Uint8Array(3));
  for (const d of ["lib", "lib/modules", "lib/modules/6.1", "lib/modules/6.1/kernel"]) assert.ok(w.has(d), d);
  assert.throws(() => w.file("lib/modules/6.1/kernel/a.ko", new Uint8Array(1)), /duplicate/);
});

test("Debian's cpio lists and extracts an archive written by Vessel", (t) => {
  if (spawnSync("cpio", ["--version"]).error) {
    t.skip("cpio not installed (apt-get install cpio)");
    return;
  }
  const a = sample();
  const list = spawnSync("cpio", ["-itv", "--quiet"], { input: a, encoding: "utf8" });
  assert.equal(list.status, 0, list.stderr);
  const lines = list.stdout.trim().split("\n");
  assert.deepEqual(
    lines.map((l) =>
      l.split(/\s+/).at(-1) === "busybox" && l.includes("->") ? "bin/sh" : l.split(/\s+/).at(-1),
    ),
    ["etc", "etc/hostname", "bin", "bin/busybox", "bin/sh", "dev", "dev/console"],
  );
  assert.match(lines.find((l) => l.endsWith("dev/console"))!, /^crw-------.*\b5,\s+1\b/);
  assert.match(lines.find((l) => l.endsWith("bin/busybox"))!, /^-rwxr-xr-x/);
  const dir = mkdtempSync(join(tmpdir(), "vessel-cpio-"));
  try {
    // extract everything except the device node (creating it needs CAP_MKNOD)
    const x = spawnSync(
      "cpio",
      ["-id", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/console"],
      {
        input: a,
        cwd: dir,
        encoding: "utf8",
      },
    );
    assert.equal(x.status, 0, x.stderr);
    assert.equal(readFileSync(join(dir, "etc/hostname"), "utf8"), "vessel\n");
    assert.deepEqual([...readFileSync(join(dir, "bin/busybox"))], [0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
    assert.equal(statSync(join(dir, "bin/busybox")).mode & 0o777, 0o755);
    assert.equal(readlinkSync(join(dir, "bin/sh")), "busybox");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
