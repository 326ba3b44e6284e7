import { BusError } from "./bus_error.js";
import { type AccessSize, allOnes, type Device } from "./device.js";

interface PortRange {
  base: number;
  length: number;
  device: Device;
}

/**
 * The x86 I/O port space (64 KiB), routed by a dense table (v86's io.js) so a lookup in the exit
 * path is one array index. Unclaimed accesses are answered (reads all ones) and counted, never
 * thrown: a guest probing for hardware is normal, not an error.
 */
export class PortBus {
  private readonly table: (PortRange | undefined)[] = new Array(0x10000).fill(undefined);
  unclaimedReads = 0;
  unclaimedWrites = 0;

  register(base: number, length: number, device: Device): void {
    if (base < 0 || length <= 0 || base + length > 0x10000) {
      throw new BusError("BUS_RANGE", `port range 0x${base.toString(16)}+${length} is outside 0-0xffff`, {
        base,
        length,
      });
    }
    for (let p = base; p < base + length; p++) {
      const other = this.table[p];
      if (other) {
        throw new BusError(
          "BUS_OVERLAP",
          `${device.name} at port 0x${p.toString(16)} overlaps ${other.device.name}`,
          { port: p },
        );
      }
    }
    const range: PortRange = { base, length, device };
    for (let p = base; p < base + length; p++) this.table[p] = range;
  }

  read(port: number, size: AccessSize): number {
    const range = this.table[port & 0xffff];
    if (range === undefined) {
      this.unclaimedReads++;
      return allOnes(size);
    }
    return range.device.read(port - range.base, size);
  }

  write(port: number, size: AccessSize, value: number): void {
    const range = this.table[port & 0xffff];
    if (range === undefined) {
      this.unclaimedWrites++;
      return;
    }
    range.device.write(port - range.base, size, value);
  }

  /** The devices on the bus, each once, with their base port. */
  devices(): { base: number; length: number; device: Device }[] {
    return [...new Set(this.table.filter((r): r is PortRange => r !== undefined))];
  }
}
