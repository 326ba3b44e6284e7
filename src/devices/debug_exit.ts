import type { AccessSize, Device } from "../bus/device.js";
import type { VirtualClock } from "./interrupt_source.js";

/**
 * Vessel's debug-exit port (layout.ts DEBUG_EXIT_PORT, length 2), what the default guest's init
 * writes to:
 *   +0 write (any value): "guest userspace started" -> `onUserspaceStarted(nowNs, value)` with the
 *      machine clock's time, so boot-to-userspace is measured exactly;
 *   +1 write: the guest command's exit status (low 8 bits) -> `onExit(status)`; the VM stops.
 * Reads return 0xff (nothing to read: the port is write-only, like QEMU's isa-debug-exit).
 * A repeated marker or exit is passed on each time; the VM decides what a second one means.
 */
export class DebugExit implements Device {
  readonly name = "debug-exit";
  /** Clock time of the first userspace marker, or undefined before it. */
  userspaceStartedNs: number | undefined;
  /** The last exit status written, or undefined. */
  exitStatus: number | undefined;

  constructor(
    private readonly clock: VirtualClock,
    private readonly onExit: (status: number) => void,
    private readonly onUserspaceStarted: (nowNs: number, value: number) => void = () => {},
  ) {}

  read(_offset: number, size: AccessSize): number {
    return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
  }

  write(offset: number, size: AccessSize, value: number): void {
    // A 16-bit write at +0 covers both ports: marker then status, in port order.
    for (let i = 0; i < size; i++) {
      const port = offset + i;
      const byte = (value >>> (8 * i)) & 0xff;
      if (port === 0) {
        const now = this.clock.nowNs();
        this.userspaceStartedNs ??= now;
        this.onUserspaceStarted(now, byte);
      } else if (port === 1) {
        this.exitStatus = byte;
        this.onExit(byte);
      }
    }
  }
}
