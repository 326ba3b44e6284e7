/**
 * The seam between buses and device models (Firecracker's BusDevice). A device sees only offsets
 * into its own range and knows nothing of engines or threads.
 */
export type AccessSize = 1 | 2 | 4;

export interface Device {
  /** Short name for statistics and logs, e.g. "uart16550@0x3f8". */
  readonly name: string;
  /** Reads `size` bytes at `offset` within the device's range; returns an unsigned value. */
  read(offset: number, size: AccessSize): number;
  /** Writes the low `size` bytes of `value` at `offset` within the device's range. */
  write(offset: number, size: AccessSize, value: number): void;
}

/**
 * An interrupt line a device drives. Level-triggered devices hold it; edge-triggered ones pulse it.
 * The engine supplies the implementation (KVM_IRQ_LINE or irqfd on KVM, the PIC/IOAPIC inputs on
 * the software engine).
 */
export interface IrqLine {
  setLevel(high: boolean): void;
}

/** A line connected to nothing, for devices used without interrupts (and in unit tests). */
export const NO_IRQ: IrqLine = { setLevel() {} };

/** Mask of the low `size` bytes: the value a read of nothing returns (all ones). */
export function allOnes(size: AccessSize): number {
  return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
}
