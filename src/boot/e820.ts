import { EBDA_START, HIMEM_START, MMIO_HOLE_END, MMIO_HOLE_START } from "../memory/layout.js";

/**
 * The BIOS e820 memory map handed to Linux in boot_params.e820_table (zero-page.rst.txt:
 * 0x1e8 e820_entries, 0x2d0 e820_table, at most 128 entries of struct boot_e820_entry
 * {u64 addr; u64 size; u32 type}, 20 bytes each, packed).
 */

/** e820 types (ACPI spec "Address Range Types"; Linux arch/x86/include/uapi/asm/e820.h). */
export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/**
 * Where guest RAM lives for a machine of `memSize` bytes: from 0 up to the 32-bit MMIO hole, and
 * the rest from 4 GiB up. The VMM backs exactly these regions; e820 describes them.
 */
export function guestRamRegions(memSize: number): { base: number; size: number }[] {
  const low = Math.min(memSize, MMIO_HOLE_START);
  const regions = [{ base: 0, size: low }];
  if (memSize > MMIO_HOLE_START) regions.push({ base: MMIO_HOLE_END, size: memSize - MMIO_HOLE_START });
  return regions;
}

/**
 * The e820 map of a machine of `memSize` bytes: conventional memory below the EBDA, the
 * EBDA/VGA/BIOS area 0x9fc00-0x100000 reserved (MP table and ACPI tables live there), RAM from
 * 1 MiB to the MMIO hole, and RAM above 4 GiB for what did not fit below.
 */
export function buildE820(memSize: number): E820Entry[] {
  const entries: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: HIMEM_START - EBDA_START, type: E820_RESERVED },
  ];
  const lowEnd = Math.min(memSize, MMIO_HOLE_START);
  if (lowEnd > HIMEM_START) entries.push({ addr: HIMEM_START, size: lowEnd - HIMEM_START, type: E820_RAM });
  if (memSize > MMIO_HOLE_START) {
    entries.push({ addr: MMIO_HOLE_END, size: memSize - MMIO_HOLE_START, type: E820_RAM });
  }
  return entries;
}
