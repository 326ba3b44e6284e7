import type { GuestMemory } from "../memory/guest_memory.js";
import {
  BOOT_GDT_START,
  BOOT_IDT_START,
  BOOT_STACK_POINTER,
  CMDLINE_MAX_SIZE,
  CMDLINE_START,
  HIMEM_START,
  MMIO_HOLE_START,
  PDE_START,
  PDPTE_START,
  PML4_START,
  ZERO_PAGE_START,
} from "../memory/layout.js";
import { type AcpiResult, type VirtioMmioSlot, writeAcpiTables } from "./acpi.js";
import { BootError } from "./boot_error.js";
import { buildBootParams } from "./boot_params.js";
import { type BzImage, parseBzImage } from "./bzimage.js";
import { buildE820, type E820Entry } from "./e820.js";
import { type Elf32Image, parseElf32 } from "./elf32.js";
import type { EntryState, SegmentState } from "./entry_state.js";
import { decompressPayload, kernelPayload, type PayloadFormat } from "./kernel_payload.js";
import { mpTableFits, writeMpTable } from "./mptable.js";

/**
 * Loads a Linux bzImage the way a boot loader using the 32-bit or 64-bit boot protocol does
 * (linux-doc-6.1 `_sources/x86/boot.rst.txt`, "32-bit Boot Protocol" / "64-bit Boot Protocol"):
 * protected-mode kernel at 1 MiB, zero page, command line, initrd, e820, ACPI and MP tables, and
 * the CPU state at the entry point. No firmware and no real-mode setup code run.
 */

export interface LinuxBootConfig {
  kernel: Uint8Array;
  initrd?: Uint8Array | undefined;
  cmdline: string;
  /** Guest RAM in bytes, laid out as e820.ts guestRamRegions(memSize). */
  memSize: number;
  cpus: number;
  virtioDevices: readonly VirtioMmioSlot[];
  /**
   * The CPU the engine offers. "x86_64": 64-bit entry for a 64-bit kernel (XLF_KERNEL_64), 32-bit
   * entry for a 32-bit one. "i386": 32-bit entry; a 64-bit kernel is refused.
   */
  arch: "x86_64" | "i386";
  /** Force the 32-bit entry (startup_32 at code32_start) even for a 64-bit kernel on x86_64. */
  entry32?: boolean;
  /** Write ACPI tables (default true). Without them Linux uses the MP table and the PIC/PIT. */
  acpi?: boolean;
  /** Name of the kernel for messages (a path). */
  kernelName?: string;
  /**
   * Decompress the bzImage's payload in the VMM and load the vmlinux ELF at its own physical
   * addresses, entering startup_32 directly (32-bit kernels only; default false: the kernel's own
   * decompressor runs). Errors particular to this path have codes starting with BOOT_PAYLOAD_
   * (see isPayloadError), so a caller can fall back to the normal path.
   */
  decompress?: boolean;
}

export interface LoadedLinux {
  entry: EntryState;
  image: BzImage;
  /** Where the protected-mode kernel was copied. */
  loadAddr: number;
  /** End of the memory the kernel may use while decompressing and initializing. */
  kernelEnd: number;
  initrd?: { addr: number; size: number };
  e820: E820Entry[];
  acpi?: AcpiResult;
  /** Where the MP table went; undefined when ACPI describes more CPUs than an MP table holds. */
  mptableAddr: number | undefined;
  /** With `decompress`: the payload's format and the vmlinux segments that were loaded. */
  vmlinux?: { format: PayloadFormat; size: number; entry: number; elf: Elf32Image };
}

/** True for the errors of the `decompress` path that the normal bzImage path does not have. */
export function isPayloadError(err: unknown): err is BootError {
  return err instanceof BootError && err.code.startsWith("BOOT_PAYLOAD_");
}

const MiB = 1024 * 1024;
const PAGE = 4096;
const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;
const alignDown = (v: number, a: number): number => Math.floor(v / a) * a;
const mib = (v: number): string => `${Math.ceil(v / MiB)} MiB`;

/** GDT slots: the boot protocol requires __BOOT_CS = 0x10 and __BOOT_DS = 0x18, flat 4 GiB. */
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
/** Descriptors (Intel SDM vol. 3A 3.4.5): base 0, limit 0xfffff, G=1, P=1, DPL 0, S=1. */
const GDT_CODE64 = 0x00af9b000000ffffn; // L=1, D=0, type 0xb (execute/read, accessed)
const GDT_CODE32 = 0x00cf9b000000ffffn; // D=1, type 0xb
const GDT_DATA = 0x00cf93000000ffffn; // B=1, type 0x3 (read/write, accessed)
const GDT_ENTRIES = 4; // null, unused, __BOOT_CS, __BOOT_DS: 0x500-0x51f, below BOOT_IDT_START

function flat(selector: number, type: number, long: boolean): SegmentState {
  return {
    selector,
    base: 0,
    limit: 0xffffffff,
    type,
    present: true,
    dpl: 0,
    s: true,
    db: !long,
    l: long,
    g: true,
  };
}

/** Decides where the initrd goes: the top of low RAM, below initrd_addr_max, page-aligned, above the kernel. */
export function placeInitrd(image: BzImage, memSize: number, initrdSize: number, kernelEnd: number): number {
  // initrd_addr_max is "the highest legal initrd address" (the last byte it may occupy).
  const ceiling = Math.min(image.initrdAddrMax + 1, memSize, MMIO_HOLE_START);
  const addr = alignDown(ceiling - initrdSize, PAGE);
  if (addr < kernelEnd) {
    const need = alignUp(kernelEnd, PAGE) + alignUp(initrdSize, PAGE);
    throw new BootError(
      "BOOT_MEMORY_TOO_SMALL",
      `guest memory of ${mib(memSize)} is too small: the kernel needs up to 0x${kernelEnd.toString(16)} ` +
        `(load address plus init_size ${mib(image.initSize)}) and the initrd ${mib(initrdSize)} more; ` +
        `give at least ${mib(need)} (--mem)`,
      { memSize, kernelEnd, initrdSize, need },
    );
  }
  return addr;
}

/**
 * The end of the memory the kernel uses while it starts: the decompressor runs at the load
 * address rounded up to kernel_alignment if relocatable, never below LOAD_PHYSICAL_ADDR
 * (= pref_address; arch/x86/boot/compressed/head_{32,64}.S), and needs init_size from there.
 */
export function kernelEndOf(image: BzImage, loadAddr: number): number {
  const runAt = image.relocatable ? alignUp(loadAddr, Math.max(image.kernelAlignment, 1)) : loadAddr;
  return Math.max(runAt, image.prefAddress, loadAddr) + image.initSize;
}

/** Identity map of the first 1 GiB with 2 MiB pages: PML4[0] -> PDPT[0] -> PD (512 x 2 MiB). */
function writeIdentityPageTables(memory: GuestMemory): void {
  memory.fill(PML4_START, PAGE, 0);
  memory.fill(PDPTE_START, PAGE, 0);
  memory.writeU64(PML4_START, BigInt(PDPTE_START | 0x3)); // present, writable
  memory.writeU64(PDPTE_START, BigInt(PDE_START | 0x3));
  for (let i = 0; i < 512; i++) memory.writeU64(PDE_START + i * 8, BigInt(i) * 0x200000n + 0x83n); // P, RW, PS
}

/** Loads the kernel and everything it needs into `memory`; returns the entry state and what went where. */
export function bootLinux(memory: GuestMemory, config: LinuxBootConfig): LoadedLinux {
  const name = config.kernelName ?? "kernel";
  const image = parseBzImage(config.kernel, name);
  const use64 = config.arch === "x86_64" && image.kernel64 && config.entry32 !== true;
  if (config.arch === "i386" && image.kernel64) {
    throw new BootError(
      "BOOT_KERNEL_NEEDS_64BIT",
      `${name} is a 64-bit kernel (xloadflags has XLF_KERNEL_64) but the CPU is i386; use an i386 kernel (vessel guest build --arch i386) or an x86_64 CPU`,
      { name },
    );
  }
  if (!Number.isInteger(config.cpus) || config.cpus < 1) {
    throw new BootError("BOOT_BAD_CPUS", `cpus must be a positive integer, got ${config.cpus}`);
  }
  // Command line: at most cmdline_size bytes plus the NUL (boot.rst.txt, "cmdline_size").
  const cmdline = new TextEncoder().encode(config.cmdline);
  const cmdMax = Math.min(image.cmdlineSize, CMDLINE_MAX_SIZE - 1);
  if (cmdline.length > cmdMax) {
    throw new BootError(
      "BOOT_CMDLINE_TOO_LONG",
      `the kernel command line is ${cmdline.length} bytes; this kernel accepts at most ${cmdMax} (cmdline_size)`,
      { length: cmdline.length, max: cmdMax },
    );
  }

  const lowEnd = Math.min(config.memSize, MMIO_HOLE_START);
  // Everything the decompress path can refuse is checked before guest memory is written, so a
  // caller that falls back to the normal path finds memory untouched.
  const vmlinux = config.decompress === true ? prepareVmlinux(image, name, lowEnd) : undefined;
  const loadAddr = vmlinux?.loadAddr ?? HIMEM_START;
  const kernelEnd = vmlinux?.kernelEnd ?? kernelEndOf(image, loadAddr);
  if (!memory.contains(0, lowEnd)) {
    throw new BootError(
      "BOOT_MEMORY_LAYOUT",
      `guest memory does not cover 0-0x${lowEnd.toString(16)} for memSize ${config.memSize}; lay it out with guestRamRegions(memSize)`,
      { memSize: config.memSize },
    );
  }
  if (kernelEnd > lowEnd) {
    throw new BootError(
      "BOOT_MEMORY_TOO_SMALL",
      `guest memory of ${mib(config.memSize)} is too small for this kernel: it needs memory up to ` +
        `0x${kernelEnd.toString(16)} (pref_address + init_size); give at least ${mib(kernelEnd + MiB)} (--mem)`,
      { memSize: config.memSize, kernelEnd },
    );
  }

  if (vmlinux === undefined) {
    memory.write(loadAddr, image.protectedMode);
  } else {
    // parse_elf() in arch/x86/boot/compressed/misc.c, without the move: each PT_LOAD at p_paddr.
    for (const seg of vmlinux.elf.segments) {
      memory.write(seg.paddr, vmlinux.data.subarray(seg.offset, seg.offset + seg.filesz));
      if (seg.memsz > seg.filesz) memory.fill(seg.paddr + seg.filesz, seg.memsz - seg.filesz, 0);
    }
  }
  memory.fill(CMDLINE_START, cmdline.length + 1, 0);
  memory.write(CMDLINE_START, cmdline);

  let initrd: { addr: number; size: number } | undefined;
  if (config.initrd !== undefined && config.initrd.length > 0) {
    const addr = placeInitrd(image, config.memSize, config.initrd.length, kernelEnd);
    memory.write(addr, config.initrd);
    initrd = { addr, size: config.initrd.length };
  }

  const e820 = buildE820(config.memSize);
  const acpi =
    config.acpi === false
      ? undefined
      : writeAcpiTables(memory, { cpus: config.cpus, virtioDevices: config.virtioDevices });
  // The MP table is the CPUs' description for `acpi=off`; with ACPI the MADT names them, so a CPU
  // count the EBDA cannot hold in an MP table (over 40) boots without one instead of failing.
  const mptableAddr =
    acpi !== undefined && !mpTableFits(config.cpus) ? undefined : writeMpTable(memory, config.cpus);
  const zp = buildBootParams({
    image,
    cmdlineAddr: CMDLINE_START,
    initrd,
    e820,
    rsdpAddr: acpi?.rsdpAddr ?? 0,
  });
  memory.write(ZERO_PAGE_START, zp);

  memory.writeU64(BOOT_GDT_START, 0n);
  memory.writeU64(BOOT_GDT_START + 8, 0n);
  memory.writeU64(BOOT_GDT_START + BOOT_CS, use64 ? GDT_CODE64 : GDT_CODE32);
  memory.writeU64(BOOT_GDT_START + BOOT_DS, GDT_DATA);
  memory.fill(BOOT_IDT_START, 8, 0);

  const data = flat(BOOT_DS, 0x3, false);
  const common = {
    rsp: BOOT_STACK_POINTER,
    rsi: ZERO_PAGE_START,
    rflags: 0x2, // IF clear: "interrupt must be disabled"
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    // No TSS is needed by Linux at entry; the hidden state is what VMX entry checks want (busy TSS).
    tr: {
      selector: 0,
      base: 0,
      limit: 0xffff,
      type: 0xb,
      present: true,
      dpl: 0,
      s: false,
      db: false,
      l: false,
      g: false,
    },
    ldt: {
      selector: 0,
      base: 0,
      limit: 0xffff,
      type: 0x2,
      present: false,
      dpl: 0,
      s: false,
      db: false,
      l: false,
      g: false,
    },
    gdt: { base: BOOT_GDT_START, limit: GDT_ENTRIES * 8 - 1 },
    idt: { base: BOOT_IDT_START, limit: 0 },
  };
  let entry: EntryState;
  if (use64) {
    writeIdentityPageTables(memory);
    entry = {
      ...common,
      mode: "long64",
      rip: loadAddr + 0x200, // startup_64
      cr0: 0x80000011, // PG | ET | PE
      cr3: PML4_START,
      cr4: 0x20, // PAE
      efer: 0x500, // LMA | LME
      cs: flat(BOOT_CS, 0xb, true),
    };
  } else {
    entry = {
      ...common,
      mode: "protected32",
      // startup_32: of the decompressor (code32_start; loaded at 1 MiB, the header's default), or
      // of vmlinux itself (arch/x86/kernel/head_32.S), which wants the same state: flat
      // __BOOT_CS/__BOOT_DS, paging off, interrupts off, ESI = boot_params.
      rip: vmlinux?.entry ?? loadAddr,
      cr0: 0x11, // ET | PE, paging off
      cr3: 0,
      cr4: 0,
      efer: 0,
      cs: flat(BOOT_CS, 0xb, false),
    };
  }
  const result: LoadedLinux = { entry, image, loadAddr, kernelEnd, e820, mptableAddr };
  if (initrd !== undefined) result.initrd = initrd;
  if (acpi !== undefined) result.acpi = acpi;
  if (vmlinux !== undefined) {
    result.vmlinux = {
      format: vmlinux.format,
      size: vmlinux.data.length,
      entry: vmlinux.entry,
      elf: vmlinux.elf,
    };
  }
  return result;
}

interface PreparedVmlinux {
  format: PayloadFormat;
  data: Uint8Array;
  elf: Elf32Image;
  /** Physical entry point (startup_32). */
  entry: number;
  /** Lowest p_paddr: LOAD_PHYSICAL_ADDR for a kernel built the usual way. */
  loadAddr: number;
  /** load address + init_size, or the end of the highest segment if that is further. */
  kernelEnd: number;
}

/**
 * Extracts, decompresses and checks the vmlinux inside `image`: every PT_LOAD at or above 1 MiB
 * and below `lowEnd`, the entry inside a segment. Loading at the ELF's own physical addresses means
 * no relocation is needed (the decompressor's handle_relocations() only runs for a moved kernel).
 */
function prepareVmlinux(image: BzImage, name: string, lowEnd: number): PreparedVmlinux {
  const payload = kernelPayload(image, name);
  const data = decompressPayload(payload, lowEnd, name);
  const elf = parseElf32(data, `${name}'s decompressed payload`);
  const bad = (why: string, details: Record<string, unknown>): BootError =>
    new BootError("BOOT_PAYLOAD_LAYOUT", `${name}'s vmlinux cannot be loaded directly: ${why}`, {
      name,
      ...details,
    });
  let loadAddr = Number.MAX_SAFE_INTEGER;
  let end = 0;
  for (const seg of elf.segments) {
    const segEnd = seg.paddr + seg.memsz;
    if (seg.paddr < HIMEM_START || segEnd > lowEnd) {
      throw bad(
        `a PT_LOAD segment at physical 0x${seg.paddr.toString(16)}-0x${segEnd.toString(16)} is outside guest RAM above 1 MiB (0x${HIMEM_START.toString(16)}-0x${lowEnd.toString(16)})`,
        { paddr: seg.paddr, memsz: seg.memsz, lowEnd },
      );
    }
    loadAddr = Math.min(loadAddr, seg.paddr);
    end = Math.max(end, segEnd);
  }
  // vmlinux.lds.S: ENTRY(phys_startup_32), a physical address; accept a virtual one too.
  let entry: number | undefined;
  for (const seg of elf.segments) {
    if (elf.entry >= seg.paddr && elf.entry < seg.paddr + seg.memsz) entry = elf.entry;
    else if (elf.entry >= seg.vaddr && elf.entry < seg.vaddr + seg.memsz)
      entry = elf.entry - seg.vaddr + seg.paddr;
    if (entry !== undefined) break;
  }
  if (entry === undefined) {
    throw bad(`its entry 0x${elf.entry.toString(16)} is in no PT_LOAD segment`, { entry: elf.entry });
  }
  // init_size covers the decompressed image's memory size with its BSS and brk (boot.rst
  // "init_size"), counted from the load address; the initrd goes above it.
  const kernelEnd = Math.max(loadAddr + image.initSize, end);
  return { format: payload.format, data, elf, entry, loadAddr, kernelEnd };
}

/** The library entry point engines call: loads everything and returns the boot CPU's entry state. */
export function loadLinux(memory: GuestMemory, config: LinuxBootConfig): EntryState {
  return bootLinux(memory, config).entry;
}
