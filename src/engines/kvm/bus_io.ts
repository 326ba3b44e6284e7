import type { AccessSize } from "../../bus/device.js";
import type { MmioBus } from "../../bus/mmio_bus.js";
import type { PortBus } from "../../bus/port_bus.js";
import type { IoHandler } from "./run_loop.js";

/** The IoHandler of the thread that owns the devices: each exit is one bus access. */
export class BusIo implements IoHandler {
  constructor(
    readonly ports: PortBus,
    readonly mmio: MmioBus,
  ) {}

  pioIn(port: number, size: AccessSize): number {
    return this.ports.read(port, size);
  }
  pioOut(port: number, size: AccessSize, value: number): void {
    this.ports.write(port, size, value);
  }
  mmioRead(addr: number, size: AccessSize): number {
    return this.mmio.read(addr, size);
  }
  mmioWrite(addr: number, size: AccessSize, value: number): void {
    this.mmio.write(addr, size, value);
  }
}
