import type { AccessSize } from "../../bus/device.js";
import type { MmioBus } from "../../bus/mmio_bus.js";
import type { PortBus } from "../../bus/port_bus.js";
import type { IoHandler } from "./run_loop.js";

/**
 * The IoHandler of the thread that owns the devices: each exit is one bus access. It also counts
 * the accesses by port and by MMIO device, so `--stats` can show which device the VM exits were for.
 */
export class BusIo implements IoHandler {
  /** Accesses (reads + writes) per I/O port. */
  readonly portCounts = new Uint32Array(0x10000);
  /** Accesses per MMIO device name ("unclaimed" for none). */
  readonly mmioCounts = new Map<string, number>();

  constructor(
    readonly ports: PortBus,
    readonly mmio: MmioBus,
  ) {}

  pioIn(port: number, size: AccessSize): number {
    this.portCounts[port & 0xffff]!++;
    return this.ports.read(port, size);
  }
  pioOut(port: number, size: AccessSize, value: number): void {
    this.portCounts[port & 0xffff]!++;
    this.ports.write(port, size, value);
  }
  mmioRead(addr: number, size: AccessSize): number {
    this.countMmio(addr);
    return this.mmio.read(addr, size);
  }
  mmioWrite(addr: number, size: AccessSize, value: number): void {
    this.countMmio(addr);
    this.mmio.write(addr, size, value);
  }

  private countMmio(addr: number): void {
    const name = this.mmio.find(addr)?.device.name ?? "unclaimed";
    this.mmioCounts.set(name, (this.mmioCounts.get(name) ?? 0) + 1);
  }

  /** The busiest devices: accesses per port device (or bare port) and per MMIO device, most first. */
  busiest(limit = 8): { what: string; count: number }[] {
    const byDevice = new Map<string, number>();
    for (let port = 0; port < 0x10000; port++) {
      const n = this.portCounts[port]!;
      if (n === 0) continue;
      const range = this.ports.devices().find((d) => port >= d.base && port < d.base + d.length);
      const what =
        range === undefined ? `port 0x${port.toString(16)} (unclaimed)` : `${range.device.name} (ports)`;
      byDevice.set(what, (byDevice.get(what) ?? 0) + n);
    }
    for (const [name, n] of this.mmioCounts) byDevice.set(`${name} (MMIO)`, n);
    return [...byDevice.entries()]
      .map(([what, count]) => ({ what, count }))
      .sort((a, b) => b.count - a.count)
      .slice(0, limit);
  }
}
