import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { acpiChecksum } from "../../src/boot/acpi.js";
import { parseBzImage } from "../../src/boot/bzimage.js";
import { guestRamRegions } from "../../src/boot/e820.js";
import { bootLinux } from "../../src/boot/linux_loader.js";
import { cachedGuest } from "../../src/guest/default_guest.js";
import { GuestMemory } from "../../src/memory/guest_memory.js";
import {
  VIRTIO_IRQ_BASE,
  VIRTIO_MMIO_SIZE,
  VIRTIO_MMIO_START,
  ZERO_PAGE_START,
} from "../../src/memory/layout.js";

/** The loader on Debian's real kernels (the default guests), when they are in the cache. */

const MiB = 1024 * 1024;

for (const arch of ["i386", "amd64"] as const) {
  test(`Debian's ${arch} kernel: header parsed and loaded with initrd, e820 and ACPI`, (t) => {
    const guest = cachedGuest(arch);
    if (guest === undefined) {
      t.skip(`no ${arch} default guest cached: run \`node bin/vessel.js guest build --arch ${arch}\``);
      return;
    }
    const kernel = readFileSync(guest.kernel);
    const initrd = readFileSync(guest.initrd);
    const image = parseBzImage(kernel, guest.kernel);
    t.diagnostic(
      `${arch}: protocol ${image.versionText}, setup_sects ${image.setupSects}, init_size ${image.initSize}, ` +
        `pref_address 0x${image.prefAddress.toString(16)}, alignment 0x${image.kernelAlignment.toString(16)}, ` +
        `xloadflags 0x${image.xloadflags.toString(16)}, "${image.kernelVersion}"`,
    );
    assert.ok(image.version >= 0x020f, `protocol ${image.versionText}`);
    assert.equal(image.kernel64, arch === "amd64");
    assert.equal(image.relocatable, true);
    assert.equal(image.cmdlineSize, 2047);
    assert.match(image.kernelVersion, /^6\.1\.\d+-\d+-(686|amd64) /);
    assert.ok(image.initrdAddrMax >= 0x37ffffff);
    assert.ok(image.initSize > image.protectedMode.length);

    const memSize = 256 * MiB;
    const mem = GuestMemory.shared(guestRamRegions(memSize));
    const loaded = bootLinux(mem, {
      kernel,
      initrd,
      cmdline: guest.cmdline,
      memSize,
      cpus: 2,
      virtioDevices: [{ base: VIRTIO_MMIO_START, size: VIRTIO_MMIO_SIZE, irq: VIRTIO_IRQ_BASE }],
      arch: arch === "amd64" ? "x86_64" : "i386",
      kernelName: guest.kernel,
    });
    assert.equal(loaded.entry.mode, arch === "amd64" ? "long64" : "protected32");
    assert.deepEqual(mem.read(0x100000, 64), new Uint8Array(image.protectedMode.subarray(0, 64)));
    const { addr, size } = loaded.initrd!;
    assert.equal(size, initrd.length);
    assert.ok(addr >= loaded.kernelEnd && addr + size <= memSize && addr % 4096 === 0);
    assert.deepEqual(mem.read(addr, 16), new Uint8Array(initrd.subarray(0, 16)));
    // the setup header in the zero page is the kernel's, with our loader fields
    assert.equal(mem.readU16(ZERO_PAGE_START + 0x206), image.version);
    assert.equal(mem.readU8(ZERO_PAGE_START + 0x210), 0xff);
    for (const { addr: a, length } of Object.values(loaded.acpi!.tables)) {
      if (length !== 36) assert.equal(acpiChecksum(mem.read(a, length)), 0);
    }
    const e820 = loaded.e820;
    assert.equal(e820.at(-1)!.addr + e820.at(-1)!.size, memSize);
  });
}

test("an i386 machine refuses Debian's 64-bit kernel with a clear message", (t) => {
  const guest = cachedGuest("amd64");
  if (guest === undefined) {
    t.skip("no amd64 default guest cached: run `node bin/vessel.js guest build --arch amd64`");
    return;
  }
  const mem = GuestMemory.shared(guestRamRegions(128 * MiB));
  assert.throws(
    () =>
      bootLinux(mem, {
        kernel: readFileSync(guest.kernel),
        cmdline: "",
        memSize: 128 * MiB,
        cpus: 1,
        virtioDevices: [],
        arch: "i386",
      }),
    /64-bit kernel .* but the CPU is i386/,
  );
});
