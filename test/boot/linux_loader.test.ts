import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { acpiChecksum, buildDsdt } from "../../src/boot/acpi.js";
import { BootError } from "../../src/boot/boot_error.js";
import { HDR, parseBzImage } from "../../src/boot/bzimage.js";
import { E820_RAM, E820_RESERVED, guestRamRegions } from "../../src/boot/e820.js";
import { bootLinux, type LinuxBootConfig, placeInitrd } from "../../src/boot/linux_loader.js";
import { GuestMemory } from "../../src/memory/guest_memory.js";
import {
  BOOT_GDT_START,
  CMDLINE_START,
  IOAPIC_START,
  MPTABLE_START,
  PML4_START,
  VIRTIO_IRQ_BASE,
  VIRTIO_MMIO_SIZE,
  VIRTIO_MMIO_START,
  ZERO_PAGE_START,
} from "../../src/memory/layout.js";
import { syntheticBzImage } from "./synthetic_bzimage.js";

const MiB = 1024 * 1024;

function machine(memSize: number): GuestMemory {
  return GuestMemory.shared(guestRamRegions(memSize));
}

function config(overrides: Partial<LinuxBootConfig> = {}): LinuxBootConfig {
  return {
    kernel: syntheticBzImage(),
    cmdline: "console=ttyS0 panic=-1",
    memSize: 128 * MiB,
    cpus: 2,
    virtioDevices: [0, 1].map((i) => ({
      base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE,
      size: VIRTIO_MMIO_SIZE,
      irq: VIRTIO_IRQ_BASE + i,
    })),
    arch: "x86_64",
    ...overrides,
  };
}

function e820Of(mem: GuestMemory): { addr: number; size: number; type: number }[] {
  const n = mem.readU8(ZERO_PAGE_START + 0x1e8);
  return Array.from({ length: n }, (_, i) => {
    const off = ZERO_PAGE_START + 0x2d0 + i * 20;
    return {
      addr: Number(mem.readU64(off)),
      size: Number(mem.readU64(off + 8)),
      type: mem.readU32(off + 16),
    };
  });
}

test("loadLinux writes the zero page: setup header, loader type, cmdline, initrd, RSDP", () => {
  const mem = machine(128 * MiB);
  const initrd = new Uint8Array(3 * MiB + 123).fill(7);
  const loaded = bootLinux(mem, config({ initrd }));
  const zp = ZERO_PAGE_START;
  assert.equal(mem.readU16(zp + HDR.boot_flag), 0xaa55);
  assert.equal(mem.readU32(zp + HDR.header), 0x53726448);
  assert.equal(mem.readU8(zp + HDR.type_of_loader), 0xff);
  assert.equal(mem.readU32(zp + HDR.cmd_line_ptr), CMDLINE_START);
  const cmd = new TextDecoder().decode(mem.read(CMDLINE_START, 23));
  assert.equal(cmd, "console=ttyS0 panic=-1\0");
  assert.equal(mem.readU32(zp + HDR.ramdisk_image), loaded.initrd!.addr);
  assert.equal(mem.readU32(zp + HDR.ramdisk_size), initrd.length);
  assert.equal(mem.readU8(loaded.initrd!.addr + 5), 7);
  assert.equal(Number(mem.readU64(zp + 0x70)), loaded.acpi!.rsdpAddr);
  // protected-mode kernel at 1 MiB
  assert.equal(mem.readU8(0x100000), 0x90);
});

test("the initrd goes to the top of RAM, page-aligned, below initrd_addr_max and clear of the kernel", () => {
  const initrd = new Uint8Array(5 * MiB + 1);
  let loaded = bootLinux(machine(256 * MiB), config({ initrd, memSize: 256 * MiB }));
  const { addr, size } = loaded.initrd!;
  assert.equal(addr % 4096, 0);
  assert.ok(addr + size <= 256 * MiB);
  assert.ok(256 * MiB - (addr + size) < 4096);
  assert.ok(addr >= loaded.kernelEnd);
  assert.equal(loaded.kernelEnd, 0x1000000 + 0x2000000); // pref_address + init_size
  // initrd_addr_max (last legal byte) caps the placement
  loaded = bootLinux(
    machine(256 * MiB),
    config({ initrd, memSize: 256 * MiB, kernel: syntheticBzImage({ initrdAddrMax: 0x7ffffff }) }),
  );
  assert.ok(loaded.initrd!.addr + size <= 0x8000000);
  // with more than 3 GiB, the initrd stays below initrd_addr_max (2 GiB) and the MMIO hole
  const image = parseBzImage(syntheticBzImage());
  const addr2 = placeInitrd(image, 3.5 * 1024 * MiB, size, loaded.kernelEnd);
  assert.equal(addr2, Math.floor((0x80000000 - size) / 4096) * 4096);
  const image4g = parseBzImage(syntheticBzImage({ initrdAddrMax: 0xffffffff }));
  assert.ok(placeInitrd(image4g, 8 * 1024 * MiB, size, loaded.kernelEnd) + size <= 0xc0000000);
});

test("loadLinux says how much memory a kernel and initrd need", () => {
  const initrd = new Uint8Array(40 * MiB);
  assert.throws(
    () => bootLinux(machine(64 * MiB), config({ initrd, memSize: 64 * MiB })),
    (err: unknown) =>
      err instanceof BootError &&
      err.code === "BOOT_MEMORY_TOO_SMALL" &&
      /give at least 88 MiB/.test(err.message),
  );
  assert.throws(
    () => bootLinux(machine(32 * MiB), config({ memSize: 32 * MiB })),
    (err: unknown) =>
      err instanceof BootError && err.code === "BOOT_MEMORY_TOO_SMALL" && /--mem/.test(err.message),
  );
});

test("loadLinux refuses a command line longer than cmdline_size", () => {
  assert.throws(
    () =>
      bootLinux(
        machine(128 * MiB),
        config({ cmdline: "x".repeat(300), kernel: syntheticBzImage({ cmdlineSize: 255 }) }),
      ),
    (err: unknown) =>
      err instanceof BootError &&
      err.code === "BOOT_CMDLINE_TOO_LONG" &&
      /300 bytes.*at most 255/.test(err.message),
  );
});

test("e820 has low RAM, the reserved EBDA/BIOS area, RAM to the MMIO hole and above 4 GiB", () => {
  const mem = machine(128 * MiB);
  bootLinux(mem, config());
  assert.deepEqual(e820Of(mem), [
    { addr: 0, size: 0x9fc00, type: E820_RAM },
    { addr: 0x9fc00, size: 0x100000 - 0x9fc00, type: E820_RESERVED },
    { addr: 0x100000, size: 127 * MiB, type: E820_RAM },
  ]);
  const regions = guestRamRegions(4 * 1024 * MiB);
  assert.deepEqual(regions, [
    { base: 0, size: 0xc0000000 },
    { base: 0x100000000, size: 0x40000000 },
  ]);
});

test("64-bit entry: startup_64, identity page tables, __BOOT_CS/__BOOT_DS flat, RSI = zero page", () => {
  const mem = machine(128 * MiB);
  const { entry } = bootLinux(mem, config());
  assert.equal(entry.mode, "long64");
  assert.equal(entry.rip, 0x100200);
  assert.equal(entry.rsi, ZERO_PAGE_START);
  assert.equal(entry.cs.selector, 0x10);
  assert.equal(entry.cs.l, true);
  assert.equal(entry.ds.selector, 0x18);
  assert.equal(entry.cr3, PML4_START);
  assert.equal(entry.rflags & 0x200, 0);
  assert.equal(mem.readU64(BOOT_GDT_START + 0x10), 0x00af9b000000ffffn);
  assert.equal(mem.readU64(BOOT_GDT_START + 0x18), 0x00cf93000000ffffn);
  // PD entry 5 maps 10 MiB as a 2 MiB page
  const pde = Number(mem.readU64(PML4_START + 0x2000 + 5 * 8));
  assert.equal(pde, 5 * 2 * MiB + 0x83);
});

test("32-bit entry: code32_start, paging off, for i386 or when asked", () => {
  for (const cfg of [
    config({ arch: "i386", kernel: syntheticBzImage({ xloadflags: 0 }) }),
    config({ entry32: true }),
  ]) {
    const mem = machine(128 * MiB);
    const { entry } = bootLinux(mem, cfg);
    assert.equal(entry.mode, "protected32");
    assert.equal(entry.rip, 0x100000);
    assert.equal(entry.cr0 & 0x80000001, 1);
    assert.equal(entry.cs.db, true);
    assert.equal(entry.rsi, ZERO_PAGE_START);
    assert.equal(mem.readU64(BOOT_GDT_START + 0x10), 0x00cf9b000000ffffn);
  }
  assert.throws(
    () => bootLinux(machine(128 * MiB), config({ arch: "i386" })),
    (err: unknown) => err instanceof BootError && err.code === "BOOT_KERNEL_NEEDS_64BIT",
  );
});

function tableAt(mem: GuestMemory, addr: number): Uint8Array {
  return mem.read(addr, mem.readU32(addr + 4));
}

test("ACPI: RSDP v2, XSDT, FADT, MADT, DSDT with valid checksums and the right contents", () => {
  const mem = machine(128 * MiB);
  const { acpi } = bootLinux(mem, config({ cpus: 3 }));
  const rsdp = mem.read(acpi!.rsdpAddr, 36);
  assert.equal(new TextDecoder().decode(rsdp.subarray(0, 8)), "RSD PTR ");
  assert.equal(acpiChecksum(rsdp.subarray(0, 20)), 0);
  assert.equal(acpiChecksum(rsdp), 0);
  assert.equal(rsdp[15], 2);
  const xsdtAddr = Number(new DataView(rsdp.buffer).getBigUint64(24, true));
  const xsdt = tableAt(mem, xsdtAddr);
  assert.equal(acpiChecksum(xsdt), 0);
  const sigs: Record<string, Uint8Array> = {};
  for (let off = 36; off < xsdt.length; off += 8) {
    const t = tableAt(mem, Number(new DataView(xsdt.buffer).getBigUint64(off, true)));
    assert.equal(acpiChecksum(t), 0);
    sigs[new TextDecoder().decode(t.subarray(0, 4))] = t;
  }
  assert.deepEqual(Object.keys(sigs).sort(), ["APIC", "FACP"]);
  const fadt = sigs["FACP"]!;
  const fdv = new DataView(fadt.buffer);
  assert.equal(fadt.length, 276);
  assert.ok(fdv.getUint32(112, true) & (1 << 20), "HW_REDUCED_ACPI");
  const dsdt = tableAt(mem, Number(fdv.getBigUint64(140, true)));
  assert.equal(acpiChecksum(dsdt), 0);
  assert.ok(Buffer.from(dsdt).includes("LNRO0005"));
  // MADT: 3 local APICs, then the IOAPIC at IOAPIC_START with GSI base 0, then IRQ0 -> GSI2
  const madt = sigs["APIC"]!;
  const mdv = new DataView(madt.buffer);
  let off = 44;
  const seen: number[] = [];
  while (off < madt.length) {
    const type = madt[off]!;
    seen.push(type);
    if (type === 1) {
      assert.equal(mdv.getUint32(off + 4, true), IOAPIC_START);
      assert.equal(mdv.getUint32(off + 8, true), 0);
    }
    if (type === 2) {
      assert.equal(madt[off + 3], 0);
      assert.equal(mdv.getUint32(off + 4, true), 2);
    }
    off += madt[off + 1]!;
  }
  assert.deepEqual(seen, [0, 0, 0, 1, 2, 4]);
});

test("MP table: floating pointer and PCMP table with processors, bus, IOAPIC and valid checksums", () => {
  const mem = machine(128 * MiB);
  bootLinux(mem, config({ cpus: 4 }));
  const fp = mem.read(MPTABLE_START, 16);
  assert.equal(new TextDecoder().decode(fp.subarray(0, 4)), "_MP_");
  assert.equal(acpiChecksum(fp), 0);
  const cfgAddr = new DataView(fp.buffer).getUint32(4, true);
  const len = mem.readU16(cfgAddr + 4);
  const table = mem.read(cfgAddr, len);
  assert.equal(new TextDecoder().decode(table.subarray(0, 4)), "PCMP");
  assert.equal(acpiChecksum(table), 0);
  const count = new DataView(table.buffer).getUint16(34, true);
  let off = 44;
  const types: number[] = [];
  for (let i = 0; i < count; i++) {
    const type = table[off]!;
    types.push(type);
    off += type === 0 ? 20 : 8;
  }
  assert.equal(off, len);
  assert.equal(types.filter((t) => t === 0).length, 4);
  assert.equal(types.filter((t) => t === 2).length, 1);
  assert.equal(types.filter((t) => t === 3).length, 16);
});

test("without ACPI, loadLinux refuses a CPU count the MP table cannot hold, and says the largest that fits", () => {
  bootLinux(machine(128 * MiB), config({ cpus: 40, acpi: false }));
  assert.throws(
    () => bootLinux(machine(128 * MiB), config({ cpus: 41, acpi: false })),
    (err: unknown) =>
      err instanceof BootError && err.code === "BOOT_MPTABLE_TOO_BIG" && /at most 40 CPUs/.test(err.message),
  );
  assert.throws(
    () => bootLinux(machine(128 * MiB), config({ cpus: 0 })),
    (err: unknown) => err instanceof BootError && err.code === "BOOT_BAD_CPUS",
  );
});

test("with ACPI, more CPUs than an MP table holds boot with the MADT alone", () => {
  assert.notEqual(bootLinux(machine(128 * MiB), config({ cpus: 40 })).mptableAddr, undefined);
  assert.equal(bootLinux(machine(128 * MiB), config({ cpus: 64 })).mptableAddr, undefined);
});

test("DSDT AML disassembles with iasl into LNRO0005 devices with their windows and GSIs", (t) => {
  if (spawnSync("iasl", ["-v"]).error) {
    t.skip("iasl not installed (apt-get install acpica-tools)");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "vessel-dsdt-"));
  try {
    const devices = [0, 1, 2].map((i) => ({
      base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE,
      size: VIRTIO_MMIO_SIZE,
      irq: VIRTIO_IRQ_BASE + i,
    }));
    writeFileSync(join(dir, "dsdt.dat"), buildDsdt(devices));
    const r = spawnSync("iasl", ["-d", "dsdt.dat"], { cwd: dir, encoding: "utf8" });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const dsl = readFileSync(join(dir, "dsdt.dsl"), "utf8");
    assert.equal(dsl.match(/Name \(_HID, "LNRO0005"\)/g)?.length, 3);
    assert.match(dsl, /Memory32Fixed \(ReadWrite,\s*0xD0001000,\s*\/\/ Address Base\s*0x00001000/);
    const gsi = (VIRTIO_IRQ_BASE + 2).toString(16).toUpperCase().padStart(8, "0");
    assert.match(
      dsl,
      new RegExp(`Interrupt \\(ResourceConsumer, Level, ActiveHigh, Exclusive, ,, \\)\\s*\\{\\s*0x${gsi},`),
    );
    assert.match(
      dsl,
      /Device \(COM1\)[\s\S]*EisaId \("PNP0501"\)[\s\S]*0x03F8[\s\S]*Edge, ActiveHigh[\s\S]*0x00000004,/,
    );
    assert.match(dsl, /EisaId \("PNP0303"\)/);
    assert.match(dsl, /EisaId \("PNP0B00"\)/);
    // and the whole table set disassembles without errors
    const mem = machine(128 * MiB);
    const { acpi } = bootLinux(mem, config());
    for (const [sig, { addr, length }] of Object.entries(acpi!.tables)) {
      if (sig === "RSD PTR") continue;
      writeFileSync(join(dir, `${sig.toLowerCase()}.dat`), mem.read(addr, length));
      const d = spawnSync("iasl", ["-d", `${sig.toLowerCase()}.dat`], { cwd: dir, encoding: "utf8" });
      assert.equal(d.status, 0, `${sig}: ${d.stdout}${d.stderr}`);
      const text = readFileSync(join(dir, `${sig.toLowerCase()}.dsl`), "utf8");
      assert.doesNotMatch(text, /Invalid|\*\*\*\* /, `${sig} disassembly reports a problem`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
