import { BootError } from "./boot_error.js";

/**
 * A Linux bzImage as the x86 boot protocol describes it (linux-doc-6.1
 * `_sources/x86/boot.rst.txt`, "THE REAL-MODE KERNEL HEADER"). The file is
 *   [boot sector + real-mode setup: (setup_sects + 1) * 512 bytes][protected-mode kernel]
 * and the "setup header" lives at offset 0x1f1 of the file; every offset below is a file offset
 * and, identically, an offset into struct boot_params (the zero page), which embeds the header.
 */

/** Offsets of the setup header fields (boot.rst.txt, table of the real-mode kernel header). */
export const HDR = {
  setup_sects: 0x1f1, // 1 byte: size of the setup in 512-byte sectors (0 means 4)
  root_flags: 0x1f2, // 2
  syssize: 0x1f4, // 4 (2.04+): size of the 32-bit code in 16-byte paragraphs
  ram_size: 0x1f8, // 2
  vid_mode: 0x1fa, // 2: video mode control (0xffff = "normal")
  root_dev: 0x1fc, // 2
  boot_flag: 0x1fe, // 2: 0xAA55
  jump: 0x200, // 2: jump instruction; byte 0x201 gives the header length (end = 0x202 + it)
  header: 0x202, // 4: magic "HdrS"
  version: 0x206, // 2: boot protocol version, major << 8 | minor
  realmode_swtch: 0x208, // 4
  start_sys_seg: 0x20c, // 2
  kernel_version: 0x20e, // 2: pointer to the version string, minus 0x200
  type_of_loader: 0x210, // 1: 0xff = undefined loader
  loadflags: 0x211, // 1: bit 0 LOADED_HIGH, bit 5 QUIET_FLAG, bit 6 KEEP_SEGMENTS, bit 7 CAN_USE_HEAP
  setup_move_size: 0x212, // 2
  code32_start: 0x214, // 4: 32-bit entry point (default 0x100000)
  ramdisk_image: 0x218, // 4: initrd load address (set by the boot loader)
  ramdisk_size: 0x21c, // 4: initrd size (set by the boot loader)
  bootsect_kludge: 0x220, // 4
  heap_end_ptr: 0x224, // 2 (2.01+)
  ext_loader_ver: 0x226, // 1 (2.02+)
  ext_loader_type: 0x227, // 1 (2.02+)
  cmd_line_ptr: 0x228, // 4 (2.02+): 32-bit pointer to the kernel command line
  initrd_addr_max: 0x22c, // 4 (2.03+): highest legal initrd address (last byte)
  kernel_alignment: 0x230, // 4 (2.05+): physical alignment required for the kernel
  relocatable_kernel: 0x234, // 1 (2.05+)
  min_alignment: 0x235, // 1 (2.10+): log2 of the minimum alignment
  xloadflags: 0x236, // 2 (2.12+): XLF_KERNEL_64 bit 0, XLF_CAN_BE_LOADED_ABOVE_4G bit 1, ...
  cmdline_size: 0x238, // 4 (2.06+): maximum command line size, without the terminating NUL
  hardware_subarch: 0x23c, // 4 (2.07+)
  hardware_subarch_data: 0x240, // 8 (2.07+)
  payload_offset: 0x248, // 4 (2.08+)
  payload_length: 0x24c, // 4 (2.08+)
  setup_data: 0x250, // 8 (2.09+)
  pref_address: 0x258, // 8 (2.10+): preferred load address
  init_size: 0x260, // 4 (2.10+): linear memory needed during initialization
  handover_offset: 0x264, // 4 (2.11+)
  kernel_info_offset: 0x268, // 4 (2.15+)
} as const;

/** loadflags bits (boot.rst.txt, "loadflags"). */
export const LOADED_HIGH = 1 << 0;
export const CAN_USE_HEAP = 1 << 7;
/** xloadflags bits (boot.rst.txt, "xloadflags"). */
export const XLF_KERNEL_64 = 1 << 0;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1;

/** Oldest protocol we load: 2.06 gives cmdline_size; 2.10 would add pref_address and init_size. */
export const MIN_PROTOCOL = 0x0206;

export interface BzImage {
  /** The whole file. */
  readonly bytes: Uint8Array;
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  readonly version: number;
  /** "2.15" */
  readonly versionText: string;
  readonly setupSects: number;
  /** syssize * 16: the protected-mode kernel's size in bytes as the header declares it. */
  readonly syssizeBytes: number;
  readonly loadflags: number;
  readonly code32Start: number;
  readonly initrdAddrMax: number;
  readonly kernelAlignment: number;
  readonly relocatable: boolean;
  readonly xloadflags: number;
  /** True if the image has a 64-bit entry point (startup_64 at load address + 0x200). */
  readonly kernel64: boolean;
  readonly cmdlineSize: number;
  /** Preferred load address (protocol 2.10+; HIMEM 0x100000 before). */
  readonly prefAddress: number;
  /** Memory the kernel needs from its runtime start while decompressing and initializing. */
  readonly initSize: number;
  /** The setup header as bytes: file offsets 0x1f1 .. 0x202 + byte at 0x201 (boot.rst.txt). */
  readonly setupHeader: Uint8Array;
  /** The kernel version string the header points to ("6.1.0-32-686 (debian-kernel@...) ..."). */
  readonly kernelVersion: string;
  /** The protected-mode kernel: file bytes from (setup_sects + 1) * 512 to the end. */
  readonly protectedMode: Uint8Array;
}

function hex(n: number | bigint, width = 0): string {
  return `0x${n.toString(16).padStart(width, "0")}`;
}

/** Says what a file that is not a bzImage looks like, for the error message. */
export function describeNonBzImage(bytes: Uint8Array): string {
  const b = bytes;
  if (b.length === 0) return "the file is empty";
  if (b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46) {
    const cls = b[4] === 2 ? "64-bit" : b[4] === 1 ? "32-bit" : "unknown-class";
    return `it is a ${cls} ELF file (an uncompressed vmlinux?); Vessel loads bzImage files (arch/x86/boot/bzImage, Debian's /boot/vmlinuz-*)`;
  }
  if (b[0] === 0x1f && b[1] === 0x8b)
    return "it is gzip-compressed data (a compressed vmlinux or an initramfs?)";
  if (b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58) return "it is xz-compressed data";
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return "it is zstd-compressed data";
  const text = new TextDecoder("latin1").decode(b.subarray(0, 6));
  if (text.startsWith("070701") || text.startsWith("070702")) return "it is a cpio archive (an initramfs?)";
  if (b.length >= 0x264 && b[0x1fe] === 0x55 && b[0x1ff] === 0xaa) {
    return 'it has a boot sector signature but no Linux setup header ("HdrS" missing): a disk image or another boot loader?';
  }
  if (b.length < 0x264)
    return `it is only ${b.length} bytes long, too short for a setup header (needs at least 0x264)`;
  const head = Array.from(b.subarray(0, 8), (x) => x.toString(16).padStart(2, "0")).join(" ");
  return `its first bytes are ${head}`;
}

/**
 * Parses and checks a bzImage. Throws BootError BOOT_NOT_BZIMAGE (saying what the file looks
 * like), BOOT_OLD_PROTOCOL (quoting the version found) or BOOT_NOT_LOADABLE_HIGH.
 */
export function parseBzImage(bytes: Uint8Array, name = "kernel"): BzImage {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const isBz =
    bytes.length >= 0x264 &&
    dv.getUint16(HDR.boot_flag, true) === 0xaa55 &&
    dv.getUint32(HDR.header, true) === 0x53726448; /* "HdrS" little-endian */
  if (!isBz) {
    throw new BootError("BOOT_NOT_BZIMAGE", `${name} is not a Linux bzImage: ${describeNonBzImage(bytes)}`, {
      name,
      size: bytes.length,
    });
  }
  const version = dv.getUint16(HDR.version, true);
  const versionText = `${version >> 8}.${(version & 0xff).toString().padStart(2, "0")}`;
  if (version < MIN_PROTOCOL) {
    throw new BootError(
      "BOOT_OLD_PROTOCOL",
      `${name} uses Linux boot protocol ${versionText} (${hex(version, 4)}); Vessel needs 2.06 or later (Linux 2.6.22+)`,
      { name, version },
    );
  }
  const loadflags = bytes[HDR.loadflags]!;
  if ((loadflags & LOADED_HIGH) === 0) {
    throw new BootError(
      "BOOT_NOT_LOADABLE_HIGH",
      `${name} is a zImage to be loaded at 0x10000 (loadflags ${hex(loadflags, 2)} lacks LOADED_HIGH); Vessel loads bzImages at 1 MiB`,
      { name, loadflags },
    );
  }
  // setup_sects == 0 means 4 for compatibility (boot.rst.txt, "setup_sects").
  const setupSects = bytes[HDR.setup_sects]! === 0 ? 4 : bytes[HDR.setup_sects]!;
  const setupSize = (setupSects + 1) * 512;
  if (setupSize >= bytes.length) {
    throw new BootError(
      "BOOT_NOT_BZIMAGE",
      `${name} is truncated: setup_sects ${setupSects} says the setup is ${setupSize} bytes, but the file is ${bytes.length}`,
      { name, setupSects, size: bytes.length },
    );
  }
  const syssizeBytes = dv.getUint32(HDR.syssize, true) * 16;
  const protectedMode = bytes.subarray(setupSize);
  if (syssizeBytes > protectedMode.length) {
    throw new BootError(
      "BOOT_NOT_BZIMAGE",
      `${name} is truncated: syssize says ${syssizeBytes} bytes of protected-mode kernel, the file has ${protectedMode.length}`,
      { name, syssizeBytes, size: bytes.length },
    );
  }
  const has = (v: number): boolean => version >= v;
  const headerEnd = 0x202 + bytes[0x201]!;
  const xloadflags = has(0x020c) ? dv.getUint16(HDR.xloadflags, true) : 0;
  const prefAddress = has(0x020a) ? Number(dv.getBigUint64(HDR.pref_address, true)) : 0x100000;
  const kvOff = dv.getUint16(HDR.kernel_version, true);
  let kernelVersion = "";
  if (kvOff !== 0 && kvOff + 0x200 < setupSize) {
    const start = kvOff + 0x200;
    let end = start;
    while (end < setupSize && end - start < 256 && bytes[end] !== 0) end++;
    kernelVersion = new TextDecoder("latin1").decode(bytes.subarray(start, end));
  }
  return {
    bytes,
    version,
    versionText,
    setupSects,
    syssizeBytes,
    loadflags,
    code32Start: dv.getUint32(HDR.code32_start, true),
    initrdAddrMax: has(0x0203) ? dv.getUint32(HDR.initrd_addr_max, true) : 0x37ffffff,
    kernelAlignment: has(0x0205) ? dv.getUint32(HDR.kernel_alignment, true) : 0x100000,
    relocatable: has(0x0205) ? bytes[HDR.relocatable_kernel]! !== 0 : false,
    xloadflags,
    kernel64: (xloadflags & XLF_KERNEL_64) !== 0,
    cmdlineSize: dv.getUint32(HDR.cmdline_size, true),
    prefAddress,
    // Before 2.10 there is no init_size; the decompressor needs roughly the image times four.
    initSize: has(0x020a) ? dv.getUint32(HDR.init_size, true) : protectedMode.length * 4,
    setupHeader: bytes.subarray(HDR.setup_sects, Math.min(headerEnd, setupSize)),
    kernelVersion,
    protectedMode,
  };
}
