import assert from "node:assert/strict";
import { test } from "node:test";
import { BootError } from "../../src/boot/boot_error.js";
import { parseBzImage, XLF_KERNEL_64 } from "../../src/boot/bzimage.js";
import { syntheticBzImage } from "./synthetic_bzimage.js";

test("parseBzImage reads the setup header fields of a bzImage", () => {
  const img = parseBzImage(syntheticBzImage({ setupSects: 27, payloadSize: 100_000 }));
  assert.equal(img.version, 0x020f);
  assert.equal(img.versionText, "2.15");
  assert.equal(img.setupSects, 27);
  assert.equal(img.protectedMode.length, 100_000);
  assert.equal(img.syssizeBytes, Math.ceil(100_000 / 16) * 16);
  assert.equal(img.code32Start, 0x100000);
  assert.equal(img.initrdAddrMax, 0x7fffffff);
  assert.equal(img.kernelAlignment, 0x200000);
  assert.equal(img.relocatable, true);
  assert.equal(img.kernel64, true);
  assert.equal(img.xloadflags & XLF_KERNEL_64, 1);
  assert.equal(img.cmdlineSize, 2047);
  assert.equal(img.prefAddress, 0x1000000);
  assert.equal(img.initSize, 0x2000000);
  assert.equal(img.setupHeader.length, 0x26c - 0x1f1);
  assert.equal(img.kernelVersion, "6.1.0-test (vessel@test) #1 SMP");
});

test("parseBzImage treats setup_sects 0 as 4", () => {
  const bytes = syntheticBzImage({ setupSects: 4 });
  bytes[0x1f1] = 0;
  assert.equal(parseBzImage(bytes).setupSects, 4);
});

function assertBootError(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BootError, `expected BootError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

test("parseBzImage says an ELF vmlinux is not a bzImage", () => {
  const elf = new Uint8Array(4096);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2], 0);
  assertBootError(
    () => parseBzImage(elf, "vmlinux"),
    "BOOT_NOT_BZIMAGE",
    /vmlinux is not a Linux bzImage: it is a 64-bit ELF/,
  );
});

test("parseBzImage says gzip data and short files are not bzImages", () => {
  const gz = new Uint8Array(4096);
  gz.set([0x1f, 0x8b, 8], 0);
  assertBootError(() => parseBzImage(gz), "BOOT_NOT_BZIMAGE", /gzip-compressed/);
  assertBootError(() => parseBzImage(new Uint8Array(100)), "BOOT_NOT_BZIMAGE", /only 100 bytes long/);
  assertBootError(() => parseBzImage(new Uint8Array(0)), "BOOT_NOT_BZIMAGE", /empty/);
});

test("parseBzImage quotes a boot protocol older than 2.06", () => {
  assertBootError(
    () => parseBzImage(syntheticBzImage({ version: 0x0204 })),
    "BOOT_OLD_PROTOCOL",
    /boot protocol 2\.04 \(0x0204\); Vessel needs 2\.06/,
  );
});

test("parseBzImage refuses a zImage without LOADED_HIGH", () => {
  assertBootError(
    () => parseBzImage(syntheticBzImage({ loadflags: 0 })),
    "BOOT_NOT_LOADABLE_HIGH",
    /LOADED_HIGH/,
  );
});

test("parseBzImage refuses a truncated image", () => {
  const full = syntheticBzImage({ payloadSize: 10_000 });
  assertBootError(
    () => parseBzImage(full.subarray(0, full.length - 5000)),
    "BOOT_NOT_BZIMAGE",
    /truncated: syssize/,
  );
});
