import { VesselError } from "../errors.js";

/** Errors reaching guest memory: an address or length outside every region. */
export class MemoryError extends VesselError {}

/**
 * How one region of guest-physical memory is backed, in a form that can be posted to a worker:
 * an mmap'ed host range (KVM: the same pages are registered with KVM_SET_USER_MEMORY_REGION and
 * viewed from every thread through their address) or a SharedArrayBuffer (software engine).
 */
export type RegionBacking = { kind: "host"; address: bigint } | { kind: "shared"; buffer: SharedArrayBuffer };

export interface RegionDescriptor {
  /** Guest-physical base address. */
  base: number;
  /** Size in bytes. */
  size: number;
  backing: RegionBacking;
}

interface Region {
  base: number;
  end: number;
  bytes: Uint8Array;
  data: DataView;
}

/**
 * Guest-physical memory (rust-vmm's vm-memory): regions of host memory with bounds-checked access.
 * Devices and loaders reach guest memory only through this class. Values are little-endian.
 */
export class GuestMemory {
  private readonly regions: Region[];
  readonly descriptors: readonly RegionDescriptor[];

  /**
   * @param descriptors the regions, non-overlapping.
   * @param viewHost maps a host address to an ArrayBuffer (sys/mman's `viewHostMemory`); needed
   *   only for "host" regions, passed in so this module stays free of FFI.
   */
  constructor(
    descriptors: readonly RegionDescriptor[],
    viewHost?: (address: bigint, size: number) => ArrayBuffer,
  ) {
    this.descriptors = descriptors;
    this.regions = descriptors
      .map((d) => {
        let buffer: ArrayBufferLike;
        if (d.backing.kind === "shared") buffer = d.backing.buffer;
        else {
          if (viewHost === undefined) {
            throw new MemoryError("MEMORY_NO_VIEW", "host-backed guest memory needs a viewHost function");
          }
          buffer = viewHost(d.backing.address, d.size);
        }
        const bytes = new Uint8Array(buffer, 0, d.size);
        return { base: d.base, end: d.base + d.size, bytes, data: new DataView(buffer, 0, d.size) };
      })
      .sort((a, b) => a.base - b.base);
  }

  /** Guest memory on SharedArrayBuffers, one per region ({base, size} pairs). */
  static shared(layout: readonly { base: number; size: number }[]): GuestMemory {
    return new GuestMemory(
      layout.map((r) => ({
        base: r.base,
        size: r.size,
        backing: { kind: "shared", buffer: new SharedArrayBuffer(r.size) },
      })),
    );
  }

  /** Total bytes of guest RAM. */
  get size(): number {
    return this.regions.reduce((n, r) => n + (r.end - r.base), 0);
  }

  private region(addr: number, len: number): Region {
    for (const r of this.regions) {
      if (addr >= r.base && addr + len <= r.end) return r;
    }
    throw new MemoryError(
      "MEMORY_OUT_OF_RANGE",
      `guest address 0x${addr.toString(16)}+${len} is outside guest memory`,
      { addr, len },
    );
  }

  /** True if [addr, addr+len) lies inside one region. */
  contains(addr: number, len: number): boolean {
    if (!Number.isInteger(addr) || !Number.isInteger(len) || addr < 0 || len < 0) return false;
    return this.regions.some((r) => addr >= r.base && addr + len <= r.end);
  }

  /**
   * A view of [addr, addr+len): writes through it reach the guest. Fails if the range is not
   * inside one region, so a guest-supplied (addr, len) can never reach host memory outside it.
   */
  slice(addr: number, len: number): Uint8Array {
    const r = this.region(addr, len);
    return r.bytes.subarray(addr - r.base, addr - r.base + len);
  }

  read(addr: number, len: number): Uint8Array {
    return this.slice(addr, len).slice();
  }

  write(addr: number, data: Uint8Array): void {
    this.slice(addr, data.length).set(data);
  }

  fill(addr: number, len: number, value: number): void {
    this.slice(addr, len).fill(value);
  }

  readU8(addr: number): number {
    const r = this.region(addr, 1);
    return r.bytes[addr - r.base]!;
  }
  readU16(addr: number): number {
    const r = this.region(addr, 2);
    return r.data.getUint16(addr - r.base, true);
  }
  readU32(addr: number): number {
    const r = this.region(addr, 4);
    return r.data.getUint32(addr - r.base, true);
  }
  readU64(addr: number): bigint {
    const r = this.region(addr, 8);
    return r.data.getBigUint64(addr - r.base, true);
  }
  writeU8(addr: number, v: number): void {
    const r = this.region(addr, 1);
    r.bytes[addr - r.base] = v;
  }
  writeU16(addr: number, v: number): void {
    const r = this.region(addr, 2);
    r.data.setUint16(addr - r.base, v, true);
  }
  writeU32(addr: number, v: number): void {
    const r = this.region(addr, 4);
    r.data.setUint32(addr - r.base, v >>> 0, true);
  }
  writeU64(addr: number, v: bigint): void {
    const r = this.region(addr, 8);
    r.data.setBigUint64(addr - r.base, v, true);
  }
}
