import { BootError } from "./boot_error.js";

/**
 * The part of an ELF32 executable a kernel loader needs: the entry point and the PT_LOAD program
 * headers (System V ABI, "ELF Header" and "Program Header"; i386 psABI for EM_386). This is what
 * the bzImage's own decompressor reads in arch/x86/boot/compressed/misc.c parse_elf().
 */

export interface ElfLoadSegment {
  /** p_offset: where the segment's bytes start in the file. */
  offset: number;
  /** p_vaddr: the kernel's virtual address (0xc1000000 for an i386 kernel at 16 MiB). */
  vaddr: number;
  /** p_paddr: the physical load address (LOAD_PHYSICAL_ADDR and up for vmlinux). */
  paddr: number;
  /** p_filesz: bytes taken from the file; the rest up to p_memsz is zero (BSS). */
  filesz: number;
  memsz: number;
}

export interface Elf32Image {
  /** e_entry as written (vmlinux.lds.S: ENTRY(phys_startup_32), already physical on i386). */
  entry: number;
  segments: ElfLoadSegment[];
}

const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ET_EXEC = 2;
const EM_386 = 3;
const PT_LOAD = 1;
const EHDR32_SIZE = 52;
const PHDR32_SIZE = 32;
/** A vmlinux has a handful of PT_LOAD headers; more than this is not a kernel. */
const MAX_PHDRS = 64;

/** Parses an i386 ELF32 executable's header and PT_LOAD segments. Throws BootError BOOT_PAYLOAD_NOT_ELF. */
export function parseElf32(bytes: Uint8Array, name = "vmlinux"): Elf32Image {
  const bad = (why: string, details: Record<string, unknown> = {}): BootError =>
    new BootError(
      "BOOT_PAYLOAD_NOT_ELF",
      `${name} is not an i386 ELF executable the loader understands: ${why}`,
      {
        name,
        size: bytes.length,
        ...details,
      },
    );
  if (
    bytes.length < EHDR32_SIZE ||
    bytes[0] !== 0x7f ||
    bytes[1] !== 0x45 ||
    bytes[2] !== 0x4c ||
    bytes[3] !== 0x46
  ) {
    const head = Array.from(bytes.subarray(0, 4), (x) => x.toString(16).padStart(2, "0")).join(" ");
    throw bad(`no ELF magic (first bytes ${head || "none"}, ${bytes.length} bytes)`);
  }
  if (bytes[4] === ELFCLASS64)
    throw bad("it is a 64-bit ELF (an x86_64 kernel); only i386 vmlinux is loaded directly");
  if (bytes[4] !== ELFCLASS32) throw bad(`EI_CLASS is ${bytes[4]}`);
  if (bytes[5] !== ELFDATA2LSB) throw bad(`EI_DATA is ${bytes[5]}, not little-endian`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = dv.getUint16(16, true);
  const machine = dv.getUint16(18, true);
  if (type !== ET_EXEC) throw bad(`e_type is ${type}, not ET_EXEC`, { type });
  if (machine !== EM_386) throw bad(`e_machine is ${machine}, not EM_386`, { machine });
  const entry = dv.getUint32(24, true);
  const phoff = dv.getUint32(28, true);
  const phentsize = dv.getUint16(42, true);
  const phnum = dv.getUint16(44, true);
  if (phentsize !== PHDR32_SIZE) throw bad(`e_phentsize is ${phentsize}, not ${PHDR32_SIZE}`);
  if (phnum === 0 || phnum > MAX_PHDRS) throw bad(`e_phnum is ${phnum}`);
  if (phoff + phnum * PHDR32_SIZE > bytes.length) {
    throw bad(`the program headers (offset ${phoff}, ${phnum} entries) run past the end: truncated?`);
  }
  const segments: ElfLoadSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * PHDR32_SIZE;
    if (dv.getUint32(p, true) !== PT_LOAD) continue;
    const seg: ElfLoadSegment = {
      offset: dv.getUint32(p + 4, true),
      vaddr: dv.getUint32(p + 8, true),
      paddr: dv.getUint32(p + 12, true),
      filesz: dv.getUint32(p + 16, true),
      memsz: dv.getUint32(p + 20, true),
    };
    if (seg.filesz > seg.memsz) throw bad(`PT_LOAD ${i} has p_filesz ${seg.filesz} > p_memsz ${seg.memsz}`);
    if (seg.offset + seg.filesz > bytes.length) {
      throw bad(
        `PT_LOAD ${i} needs file bytes up to ${seg.offset + seg.filesz}, the file has ${bytes.length}: truncated?`,
        { segment: i },
      );
    }
    segments.push(seg);
  }
  if (segments.length === 0) throw bad("it has no PT_LOAD segment");
  return { entry, segments };
}
