import { HDR } from "../../src/boot/bzimage.js";

/**
 * Builds a minimal bzImage in memory, with the header fields a boot loader reads (boot.rst.txt),
 * for tests that should not need a real kernel. The protected-mode part is `payloadSize` bytes
 * of 0x90 (nop).
 */
export function syntheticBzImage(
  options: {
    version?: number;
    setupSects?: number;
    payloadSize?: number;
    loadflags?: number;
    xloadflags?: number;
    initrdAddrMax?: number;
    cmdlineSize?: number;
    initSize?: number;
    prefAddress?: number;
    kernelAlignment?: number;
    relocatable?: boolean;
  } = {},
): Uint8Array {
  const setupSects = options.setupSects ?? 4;
  const payloadSize = options.payloadSize ?? 64 * 1024;
  const bytes = new Uint8Array((setupSects + 1) * 512 + payloadSize);
  const dv = new DataView(bytes.buffer);
  bytes[HDR.setup_sects] = setupSects;
  dv.setUint32(HDR.syssize, Math.ceil(payloadSize / 16), true);
  dv.setUint16(HDR.vid_mode, 0xffff, true);
  dv.setUint16(HDR.boot_flag, 0xaa55, true);
  bytes[0x200] = 0xeb; // jmp short
  bytes[0x201] = 0x6a; // header ends at 0x202 + 0x6a = 0x26c
  dv.setUint32(HDR.header, 0x53726448, true); // "HdrS"
  dv.setUint16(HDR.version, options.version ?? 0x020f, true);
  dv.setUint16(HDR.kernel_version, 0x300, true); // string at 0x500
  new TextEncoder().encodeInto("6.1.0-test (vessel@test) #1 SMP", bytes.subarray(0x500));
  bytes[HDR.loadflags] = options.loadflags ?? 0x01;
  dv.setUint32(HDR.code32_start, 0x100000, true);
  dv.setUint32(HDR.initrd_addr_max, options.initrdAddrMax ?? 0x7fffffff, true);
  dv.setUint32(HDR.kernel_alignment, options.kernelAlignment ?? 0x200000, true);
  bytes[HDR.relocatable_kernel] = (options.relocatable ?? true) ? 1 : 0;
  bytes[HDR.min_alignment] = 21;
  dv.setUint16(HDR.xloadflags, options.xloadflags ?? 0x0b, true);
  dv.setUint32(HDR.cmdline_size, options.cmdlineSize ?? 2047, true);
  dv.setBigUint64(HDR.pref_address, BigInt(options.prefAddress ?? 0x1000000), true);
  dv.setUint32(HDR.init_size, options.initSize ?? 0x2000000, true);
  bytes.fill(0x90, (setupSects + 1) * 512);
  return bytes;
}
