import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { BootError } from "../../src/boot/boot_error.js";
import { HDR, parseBzImage } from "../../src/boot/bzimage.js";
import { guestRamRegions } from "../../src/boot/e820.js";
import { parseElf32 } from "../../src/boot/elf32.js";
import { decompressPayload, kernelPayload } from "../../src/boot/kernel_payload.js";
import { bootLinux, isPayloadError, type LinuxBootConfig } from "../../src/boot/linux_loader.js";
import { GuestMemory } from "../../src/memory/guest_memory.js";
import { ZERO_PAGE_START } from "../../src/memory/layout.js";
import { syntheticBzImage } from "./synthetic_bzimage.js";

const MiB = 1024 * 1024;
const REAL_KERNEL = join(homedir(), ".cache/vessel/guest/i386/vmlinuz");
const hasXz = spawnSync("xz", ["--version"]).status === 0;

interface TinySegment {
  paddr: number;
  vaddr: number;
  data: Uint8Array;
  memsz: number;
}

/**
 * A tiny i386 ELF32 executable (System V ABI layout): 52-byte header, program headers right
 * after it, then each segment's bytes.
 */
function tinyElf(entry: number, segments: TinySegment[], machine = 3): Uint8Array {
  const phoff = 52;
  let offset = phoff + segments.length * 32;
  const size = offset + segments.reduce((n, s) => n + s.data.length, 0);
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 1 /* ELFCLASS32 */, 1 /* ELFDATA2LSB */, 1 /* EV_CURRENT */]);
  dv.setUint16(16, 2, true); // e_type ET_EXEC
  dv.setUint16(18, machine, true); // e_machine EM_386
  dv.setUint32(20, 1, true); // e_version
  dv.setUint32(24, entry, true);
  dv.setUint32(28, phoff, true);
  dv.setUint16(40, 52, true); // e_ehsize
  dv.setUint16(42, 32, true); // e_phentsize
  dv.setUint16(44, segments.length, true);
  segments.forEach((s, i) => {
    const p = phoff + i * 32;
    dv.setUint32(p, 1, true); // PT_LOAD
    dv.setUint32(p + 4, offset, true);
    dv.setUint32(p + 8, s.vaddr, true);
    dv.setUint32(p + 12, s.paddr, true);
    dv.setUint32(p + 16, s.data.length, true);
    dv.setUint32(p + 20, s.memsz, true);
    dv.setUint32(p + 24, 7, true); // RWX
    b.set(s.data, offset);
    offset += s.data.length;
  });
  return b;
}

/** A synthetic bzImage (protocol 2.15) whose payload_offset/payload_length point at `payload`. */
function bzImageWithPayload(payload: Uint8Array, options: { lengthSlack?: number } = {}): Uint8Array {
  const payloadOffset = 0x100;
  // A whole number of 16-byte paragraphs, as syssize counts them.
  const image = syntheticBzImage({
    xloadflags: 0,
    payloadSize: Math.ceil((payloadOffset + payload.length + 64) / 16) * 16,
  });
  const dv = new DataView(image.buffer);
  const pm = (image[HDR.setup_sects]! + 1) * 512;
  image.set(payload, pm + payloadOffset);
  dv.setUint32(HDR.payload_offset, payloadOffset, true);
  dv.setUint32(HDR.payload_length, payload.length + (options.lengthSlack ?? 0), true);
  return image;
}

const TEXT = Uint8Array.from([0xf4, 0xeb, 0xfd]); // hlt; jmp .-1
const DATA = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
const PAGE_OFFSET = 0xc0000000;
const tinySegments: TinySegment[] = [
  { paddr: 0x1000000, vaddr: PAGE_OFFSET + 0x1000000, data: TEXT, memsz: TEXT.length },
  { paddr: 0x1200000, vaddr: PAGE_OFFSET + 0x1200000, data: DATA, memsz: 0x3000 }, // with BSS
];

function config(kernel: Uint8Array, overrides: Partial<LinuxBootConfig> = {}): LinuxBootConfig {
  return {
    kernel,
    cmdline: "console=ttyS0 nokaslr",
    memSize: 128 * MiB,
    cpus: 1,
    virtioDevices: [],
    arch: "i386",
    decompress: true,
    ...overrides,
  };
}

function expectBootError(fn: () => unknown, code: string, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BootError, `expected a BootError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

test("decompress loads a gzip payload's PT_LOAD segments at p_paddr, zeroes BSS and enters e_entry", () => {
  const kernel = bzImageWithPayload(gzipSync(tinyElf(0x1000000, tinySegments)));
  const memory = GuestMemory.shared(guestRamRegions(128 * MiB));
  memory.fill(0x1200000 + DATA.length, 16, 0xaa); // BSS must be cleared
  const loaded = bootLinux(memory, config(kernel, { initrd: new Uint8Array(8192).fill(7) }));
  assert.equal(loaded.entry.mode, "protected32");
  assert.equal(loaded.entry.rip, 0x1000000);
  assert.equal(loaded.entry.rsi, ZERO_PAGE_START);
  assert.equal(loaded.entry.cr0 & 0x80000001, 0x1, "protected mode, paging off");
  assert.equal(loaded.entry.rflags & 0x200, 0, "interrupts off");
  assert.equal(loaded.entry.cs.selector, 0x10);
  assert.equal(loaded.entry.ds.selector, 0x18);
  assert.deepEqual(memory.slice(0x1000000, TEXT.length), TEXT);
  assert.deepEqual(memory.slice(0x1200000, DATA.length), DATA);
  assert.deepEqual(memory.slice(0x1200000 + DATA.length, 16), new Uint8Array(16));
  assert.equal(loaded.vmlinux?.format, "gzip");
  assert.equal(loaded.vmlinux?.elf.segments.length, 2);
  // kernel_end counts init_size (0x2000000 in the synthetic header) from the lowest p_paddr.
  assert.equal(loaded.loadAddr, 0x1000000);
  assert.equal(loaded.kernelEnd, 0x3000000);
  assert.ok(loaded.initrd !== undefined && loaded.initrd.addr >= loaded.kernelEnd);
  // The zero page is filled as on the normal path: the header magic and the initrd fields.
  assert.equal(memory.readU32(ZERO_PAGE_START + HDR.header), 0x53726448);
  assert.equal(memory.readU32(ZERO_PAGE_START + HDR.ramdisk_image), loaded.initrd.addr);
});

test("decompress converts a virtual e_entry to its physical address", () => {
  const kernel = bzImageWithPayload(gzipSync(tinyElf(PAGE_OFFSET + 0x1000001, tinySegments)));
  const loaded = bootLinux(GuestMemory.shared(guestRamRegions(128 * MiB)), config(kernel));
  assert.equal(loaded.entry.rip, 0x1000001);
});

test("without decompress the same bzImage loads as before: protected-mode part at 1 MiB", () => {
  const kernel = bzImageWithPayload(gzipSync(tinyElf(0x1000000, tinySegments)));
  const memory = GuestMemory.shared(guestRamRegions(128 * MiB));
  const loaded = bootLinux(memory, config(kernel, { decompress: false }));
  assert.equal(loaded.entry.rip, 0x100000);
  assert.equal(loaded.vmlinux, undefined);
  const pm = parseBzImage(kernel).protectedMode;
  assert.deepEqual(memory.read(0x100000, pm.length), pm.slice());
});

test("a payload that is not an ELF is refused with BOOT_PAYLOAD_NOT_ELF before guest memory is written", () => {
  const kernel = bzImageWithPayload(
    gzipSync(new TextEncoder().encode("not an executable at all, just text")),
  );
  const memory = GuestMemory.shared(guestRamRegions(128 * MiB));
  let caught: unknown;
  try {
    bootLinux(memory, config(kernel));
  } catch (err) {
    caught = err;
  }
  assert.ok(isPayloadError(caught));
  assert.equal(caught.code, "BOOT_PAYLOAD_NOT_ELF");
  assert.match(caught.message, /no ELF magic/);
  assert.equal(memory.readU32(ZERO_PAGE_START + HDR.header), 0, "zero page untouched");
  assert.equal(memory.readU32(0x100000), 0, "nothing loaded at 1 MiB");
});

test("a 64-bit or non-i386 ELF payload is refused with BOOT_PAYLOAD_NOT_ELF", () => {
  const elf = tinyElf(0x1000000, tinySegments, 62 /* EM_X86_64 */);
  expectBootError(() => parseElf32(elf), "BOOT_PAYLOAD_NOT_ELF", /e_machine is 62/);
  elf[4] = 2; // ELFCLASS64
  expectBootError(() => parseElf32(elf), "BOOT_PAYLOAD_NOT_ELF", /64-bit ELF/);
});

test("an ELF whose segment runs past the end of the decompressed data is refused as truncated", () => {
  const elf = tinyElf(0x1000000, tinySegments);
  const kernel = bzImageWithPayload(gzipSync(elf.subarray(0, elf.length - 4)));
  expectBootError(
    () => bootLinux(GuestMemory.shared(guestRamRegions(128 * MiB)), config(kernel)),
    "BOOT_PAYLOAD_NOT_ELF",
    /truncated/,
  );
});

test("payload_length past the end of the image is refused with BOOT_PAYLOAD_MISSING", () => {
  const kernel = bzImageWithPayload(gzipSync(tinyElf(0x1000000, tinySegments)), { lengthSlack: 4096 });
  expectBootError(
    () => bootLinux(GuestMemory.shared(guestRamRegions(128 * MiB)), config(kernel)),
    "BOOT_PAYLOAD_MISSING",
    /not inside its .*truncated/,
  );
});

test("a truncated gzip payload is refused with BOOT_PAYLOAD_CORRUPT", () => {
  const gz = gzipSync(tinyElf(0x1000000, tinySegments));
  const kernel = bzImageWithPayload(gz.subarray(0, gz.length - 12));
  expectBootError(
    () => bootLinux(GuestMemory.shared(guestRamRegions(128 * MiB)), config(kernel)),
    "BOOT_PAYLOAD_CORRUPT",
    /gzip payload does not decompress/,
  );
});

test("an xz payload is decompressed with xz, and a truncated one is refused with BOOT_PAYLOAD_CORRUPT", (t) => {
  if (!hasXz) {
    t.skip("xz is not installed (apt-get install xz-utils)");
    return;
  }
  const elf = tinyElf(0x1000000, tinySegments);
  const xz = spawnSync("xz", ["-c", "--check=crc32"], { input: elf }).stdout;
  const trailer = new Uint8Array(4);
  new DataView(trailer.buffer).setUint32(0, elf.length, true); // scripts/Makefile.lib size_append
  const payload = new Uint8Array([...xz, ...trailer]);
  const loaded = bootLinux(
    GuestMemory.shared(guestRamRegions(128 * MiB)),
    config(bzImageWithPayload(payload)),
  );
  assert.equal(loaded.vmlinux?.format, "xz");
  assert.equal(loaded.vmlinux?.size, elf.length);
  const cut = new Uint8Array([...xz.subarray(0, xz.length - 20), ...trailer]);
  expectBootError(
    () => bootLinux(GuestMemory.shared(guestRamRegions(128 * MiB)), config(bzImageWithPayload(cut))),
    "BOOT_PAYLOAD_CORRUPT",
    /xz payload does not decompress/,
  );
});

test("a payload in a format Vessel does not decompress is refused with BOOT_PAYLOAD_UNSUPPORTED", () => {
  const kernel = bzImageWithPayload(Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]));
  expectBootError(
    () => bootLinux(GuestMemory.shared(guestRamRegions(128 * MiB)), config(kernel)),
    "BOOT_PAYLOAD_UNSUPPORTED",
    /zstd-compressed/,
  );
});

test("a segment below 1 MiB is refused with BOOT_PAYLOAD_LAYOUT", () => {
  const low: TinySegment[] = [{ paddr: 0x7000, vaddr: 0x7000, data: TEXT, memsz: TEXT.length }];
  const kernel = bzImageWithPayload(gzipSync(tinyElf(0x7000, low)));
  expectBootError(
    () => bootLinux(GuestMemory.shared(guestRamRegions(128 * MiB)), config(kernel)),
    "BOOT_PAYLOAD_LAYOUT",
    /outside guest RAM above 1 MiB/,
  );
});

test("the cached Debian i386 kernel's payload is an xz-compressed i386 vmlinux loadable at 16 MiB", (t) => {
  if (!existsSync(REAL_KERNEL)) {
    t.skip(`no cached i386 kernel at ${REAL_KERNEL} (vessel guest build --arch i386)`);
    return;
  }
  if (!hasXz) {
    t.skip("xz is not installed (apt-get install xz-utils)");
    return;
  }
  const image = parseBzImage(new Uint8Array(readFileSync(REAL_KERNEL)), REAL_KERNEL);
  const payload = kernelPayload(image, REAL_KERNEL);
  assert.equal(payload.format, "xz");
  const vmlinux = decompressPayload(payload, 256 * MiB, REAL_KERNEL);
  const elf = parseElf32(vmlinux);
  assert.ok(elf.segments.length >= 2, `${elf.segments.length} PT_LOAD segments`);
  const loadAddr = Math.min(...elf.segments.map((s) => s.paddr));
  assert.equal(loadAddr, image.prefAddress, "vmlinux starts at LOAD_PHYSICAL_ADDR (pref_address)");
  assert.equal(elf.entry, loadAddr, "ENTRY(phys_startup_32) is the start of .text");
  for (const s of elf.segments) {
    assert.equal(s.vaddr - s.paddr, PAGE_OFFSET, "i386 vmlinux is linked at PAGE_OFFSET + physical");
    assert.ok(s.paddr + s.memsz <= loadAddr + image.initSize, "every segment fits in init_size");
  }
  const memory = GuestMemory.shared(guestRamRegions(256 * MiB));
  const loaded = bootLinux(
    memory,
    config(image.bytes, { memSize: 256 * MiB, initrd: new Uint8Array(4 * MiB) }),
  );
  assert.equal(loaded.entry.rip, elf.entry);
  const first = elf.segments[0]!;
  assert.deepEqual(memory.slice(first.paddr, 4096), vmlinux.subarray(first.offset, first.offset + 4096));
  assert.ok(loaded.initrd !== undefined && loaded.initrd.addr >= loadAddr + image.initSize);
});
