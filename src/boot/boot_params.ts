import type { BzImage } from "./bzimage.js";
import { HDR } from "./bzimage.js";
import type { E820Entry } from "./e820.js";

/**
 * struct boot_params, the "zero page" (linux-doc-6.1 `_sources/x86/zero-page.rst.txt`): 4 KiB
 * the loader fills and passes to the kernel in RSI/ESI. Offsets are those of zero-page.rst.txt;
 * the setup header (0x1f1..) is laid out as in boot.rst.txt (see bzimage.ts HDR).
 */
export const BOOT_PARAMS_SIZE = 0x1000;
/** Offsets outside the setup header (zero-page.rst.txt). */
export const ZP = {
  acpi_rsdp_addr: 0x070, // 8: physical address of the ACPI RSDP
  ext_ramdisk_image: 0x0c0, // 4: ramdisk_image high 32 bits
  ext_ramdisk_size: 0x0c4, // 4: ramdisk_size high 32 bits
  ext_cmd_line_ptr: 0x0c8, // 4: cmd_line_ptr high 32 bits
  e820_entries: 0x1e8, // 1: number of entries in e820_table
  sentinel: 0x1ef, // 1: must stay 0 (detects loaders that copy the header wrongly)
  e820_table: 0x2d0, // 128 * 20 bytes: struct boot_e820_entry {u64 addr, u64 size, u32 type}
} as const;
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
/** type_of_loader 0xff: "undefined" boot loader (boot.rst.txt, "type_of_loader"). */
export const LOADER_TYPE_UNDEFINED = 0xff;

export interface BootParamsInput {
  image: BzImage;
  /** Guest-physical address of the NUL-terminated command line. */
  cmdlineAddr: number;
  initrd?: { addr: number; size: number } | undefined;
  e820: readonly E820Entry[];
  /** Guest-physical address of the RSDP, or 0 to let the kernel scan 0xe0000-0xfffff. */
  rsdpAddr: number;
}

/** Builds the zero page. The caller writes it to ZERO_PAGE_START. */
export function buildBootParams(input: BootParamsInput): Uint8Array {
  const zp = new Uint8Array(BOOT_PARAMS_SIZE);
  const dv = new DataView(zp.buffer);
  // 32/64-bit boot protocol: "the setup header from offset 0x01f1 of kernel image on should be
  // loaded into struct boot_params" (boot.rst.txt), up to 0x202 + the byte at 0x201.
  zp.set(input.image.setupHeader, HDR.setup_sects);
  zp[HDR.type_of_loader] = LOADER_TYPE_UNDEFINED;
  // Keep LOADED_HIGH; clear the bits that concern the 16-bit setup code we do not run.
  zp[HDR.loadflags] = input.image.loadflags & 0x01;
  dv.setUint32(HDR.cmd_line_ptr, input.cmdlineAddr >>> 0, true);
  dv.setUint32(ZP.ext_cmd_line_ptr, Math.floor(input.cmdlineAddr / 2 ** 32), true);
  if (input.initrd !== undefined) {
    dv.setUint32(HDR.ramdisk_image, input.initrd.addr >>> 0, true);
    dv.setUint32(HDR.ramdisk_size, input.initrd.size >>> 0, true);
    dv.setUint32(ZP.ext_ramdisk_image, Math.floor(input.initrd.addr / 2 ** 32), true);
    dv.setUint32(ZP.ext_ramdisk_size, Math.floor(input.initrd.size / 2 ** 32), true);
  } else {
    dv.setUint32(HDR.ramdisk_image, 0, true);
    dv.setUint32(HDR.ramdisk_size, 0, true);
  }
  dv.setBigUint64(ZP.acpi_rsdp_addr, BigInt(input.rsdpAddr), true);
  if (input.e820.length > E820_MAX_ENTRIES_ZEROPAGE) throw new RangeError("too many e820 entries");
  zp[ZP.e820_entries] = input.e820.length;
  input.e820.forEach((e, i) => {
    const off = ZP.e820_table + i * 20;
    dv.setBigUint64(off, BigInt(e.addr), true);
    dv.setBigUint64(off + 8, BigInt(e.size), true);
    dv.setUint32(off + 16, e.type, true);
  });
  zp[ZP.sentinel] = 0;
  return zp;
}
