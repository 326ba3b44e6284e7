import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { moduleName, parseBuiltin, readModinfo, resolveModules } from "../../src/guest/kernel_modules.js";
import { cachedGuest, GUEST_MODULES, guestPaths, type GuestManifest } from "../../src/guest/default_guest.js";

test("modules are ordered dependencies first, built-ins skipped, unknown ones reported", () => {
  const files = new Map([
    ["virtio", "kernel/drivers/virtio/virtio.ko"],
    ["virtio_ring", "kernel/drivers/virtio/virtio_ring.ko"],
    ["virtio_mmio", "kernel/drivers/virtio/virtio_mmio.ko"],
    ["virtio_net", "kernel/drivers/net/virtio_net.ko"],
    ["net_failover", "kernel/drivers/net/net_failover.ko"],
    ["failover", "kernel/net/core/failover.ko"],
  ]);
  const deps: Record<string, string[]> = {
    virtio_mmio: ["virtio", "virtio_ring"],
    virtio_net: ["net_failover", "virtio", "virtio_ring"],
    net_failover: ["failover"],
  };
  const { order, missing } = resolveModules(
    ["virtio_mmio", "virtio_net", "virtio-rng", "virtio_blk"],
    files,
    new Set(["virtio_blk"]),
    (n) => deps[n] ?? [],
  );
  assert.deepEqual(
    order.map((m) => m.name),
    ["virtio", "virtio_ring", "virtio_mmio", "failover", "net_failover", "virtio_net"],
  );
  assert.deepEqual(missing, ["virtio_rng"]);
  assert.equal(moduleName("virtio-rng.ko.xz"), "virtio_rng");
  assert.deepEqual(
    [...parseBuiltin("kernel/drivers/tty/serial/8250/8250.ko\nkernel/a/b-c.ko\n")],
    ["8250", "b_c"],
  );
});

test("readModinfo reads depends= and name= from a real Debian module", (t) => {
  const guest = cachedGuest("i386") ?? cachedGuest("amd64");
  if (guest === undefined) {
    t.skip("no default guest cached: run `node bin/vessel.js guest build --arch i386`");
    return;
  }
  // The initramfs is an uncompressed newc cpio: find virtio_mmio.ko inside it.
  const cpio = readFileSync(guest.initrd);
  const nameAt = cpio.indexOf("virtio_mmio.ko\0");
  assert.ok(nameAt > 0);
  const headerAt = cpio.lastIndexOf("070701", nameAt);
  const hdr = cpio.subarray(headerAt, headerAt + 110).toString("latin1");
  const field = (i: number): number => Number.parseInt(hdr.slice(6 + i * 8, 14 + i * 8), 16);
  const dataAt = (headerAt + 110 + field(11) + 3) & ~3;
  const ko = cpio.subarray(dataAt, dataAt + field(6));
  const info = readModinfo(ko);
  assert.deepEqual(info.get("name"), ["virtio_mmio"]);
  assert.deepEqual(info.get("depends")?.[0]?.split(",").sort(), ["virtio", "virtio_ring"]);
  assert.ok(info.get("alias")?.includes("acpi*:LNRO0005:*"));
  assert.ok(existsSync(guest.kernel));
});

test("the initramfs module list has ext4 (and crc32c, asked for by name at mount) and virtio_pci for a root disk", () => {
  for (const m of ["virtio_mmio", "virtio_pci", "virtio_blk", "crc32c_generic", "ext4"])
    assert.ok(GUEST_MODULES.includes(m), m);
  // crc32c is loaded before ext4 mounts anything (the list is loaded in order)
  assert.ok(GUEST_MODULES.indexOf("crc32c_generic") < GUEST_MODULES.indexOf("ext4"));
});

test("a built guest carries ext4 with its dependencies jbd2, mbcache and crc16 loaded before it", (t) => {
  const arch =
    cachedGuest("i386") !== undefined ? "i386" : cachedGuest("amd64") !== undefined ? "amd64" : undefined;
  if (arch === undefined) {
    t.skip("no default guest cached: run `node bin/vessel.js guest build --arch i386`");
    return;
  }
  const m = JSON.parse(readFileSync(guestPaths(arch).manifest, "utf8")) as GuestManifest;
  const at = (n: string): number => m.modules.indexOf(n);
  for (const dep of ["jbd2", "mbcache", "crc16"]) {
    assert.ok(at(dep) >= 0, `${dep} missing from ${m.modules.join(" ")}`);
    assert.ok(at(dep) < at("ext4"), `${dep} after ext4`);
  }
  assert.ok(at("crc32c_generic") >= 0, m.modules.join(" "));
  assert.ok(at("virtio_pci") > at("virtio_pci_modern_dev"));
});
