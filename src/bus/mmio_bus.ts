import { BusError } from "./bus_error.js";
import { type AccessSize, allOnes, type Device } from "./device.js";

interface MmioRange {
  base: number;
  length: number;
  device: Device;
}

/**
 * Guest-physical MMIO windows, a sorted range list searched by bisection. Unclaimed accesses are
 * answered (reads all ones) and counted.
 */
export class MmioBus {
  private ranges: MmioRange[] = [];
  private last: MmioRange | undefined;
  unclaimedReads = 0;
  unclaimedWrites = 0;

  register(base: number, length: number, device: Device): void {
    if (length <= 0)
      throw new BusError("BUS_RANGE", `MMIO range of ${device.name} is empty`, { base, length });
    for (const r of this.ranges) {
      if (base < r.base + r.length && r.base < base + length) {
        throw new BusError(
          "BUS_OVERLAP",
          `${device.name} at 0x${base.toString(16)} overlaps ${r.device.name} at 0x${r.base.toString(16)}`,
          { base, length },
        );
      }
    }
    this.ranges.push({ base, length, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  find(addr: number): MmioRange | undefined {
    const last = this.last;
    if (last !== undefined && addr >= last.base && addr < last.base + last.length) return last;
    let lo = 0;
    let hi = this.ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.ranges[mid]!;
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.length) lo = mid + 1;
      else return (this.last = r);
    }
    return undefined;
  }

  read(addr: number, size: AccessSize): number {
    const r = this.find(addr);
    if (r === undefined) {
      this.unclaimedReads++;
      return allOnes(size);
    }
    return r.device.read(addr - r.base, size);
  }

  write(addr: number, size: AccessSize, value: number): void {
    const r = this.find(addr);
    if (r === undefined) {
      this.unclaimedWrites++;
      return;
    }
    r.device.write(addr - r.base, size, value);
  }

  devices(): readonly { base: number; length: number; device: Device }[] {
    return this.ranges;
  }
}
