import type { AccessSize, Device, IrqLine } from "../bus/device.js";
import { GuestFaultLog, hex } from "./guest_fault_log.js";
import type { ApicMessage } from "./lapic.js";

/** Number of IOAPIC input pins (GSIs 0-23). */
export const IOAPIC_PINS = 24;

/**
 * An Intel 82093AA I/O APIC at IOAPIC_START (82093AA data sheet; the version the PIIX3-era PCs
 * and KVM present, 0x11, which has no EOI register: end of interrupt arrives as the local APIC's
 * EOI broadcast, `eoi(vector)`).
 *
 * MMIO (4 KiB window, 32-bit accesses): 0x00 IOREGSEL (register index, b7:0), 0x10 IOWIN (the
 * selected register). Registers: 0x00 ID (b27:24), 0x01 version (b7:0 0x11, b23:16 max
 * redirection entry 23), 0x02 arbitration ID, 0x10 + 2n / 0x11 + 2n redirection entry n low/high:
 *   b7:0 vector, b10:8 delivery mode, b11 logical destination, b12 delivery status (RO),
 *   b13 polarity (1 = active low), b14 remote IRR (RO), b15 trigger (1 = level), b16 mask,
 *   b63:56 destination.
 * Reset: every entry masked.
 *
 * Pin levels are logical (asserted = true): polarity is recorded but, as KVM and QEMU do, not
 * applied, since Vessel's devices drive `IrqLine`s with "asserted" rather than the wire level.
 * Edge pins deliver on a rising edge; an edge arriving while the pin is masked is remembered
 * and delivered on unmask (as QEMU does). Level pins deliver while asserted and remote IRR is
 * clear, set remote IRR, and redeliver after the EOI if still asserted.
 */
export class IoApic implements Device {
  readonly name = "ioapic";
  readonly faults = new GuestFaultLog("ioapic");
  readonly stats = { delivered: 0 };

  private readonly low = new Uint32Array(IOAPIC_PINS).fill(REDIR_MASKED);
  private readonly high = new Uint32Array(IOAPIC_PINS);
  /** Pins with a request latched (edge) or asserted (level). */
  private irr = 0;
  /** Current logical level of each pin. */
  private levels = 0;
  private ioregsel = 0;
  private id = 0;

  /** @param sink where messages go: the local APIC's `deliver` (or a test recorder). */
  constructor(private readonly sink: (message: ApicMessage) => void) {}

  /** Drives pin `pin` (0-23); other values are ignored. */
  setIrq(pin: number, level: boolean): void {
    if (pin < 0 || pin >= IOAPIC_PINS) return;
    const mask = 1 << pin;
    const was = (this.levels & mask) !== 0;
    if (level) this.levels |= mask;
    else this.levels &= ~mask;
    const isLevel = (this.low[pin]! & REDIR_LEVEL) !== 0;
    if (isLevel) {
      if (level) this.irr |= mask;
      else this.irr &= ~mask;
    } else if (level && !was) {
      this.irr |= mask;
    }
    this.service(pin);
  }

  /** An IrqLine for pin `pin`. */
  line(pin: number): IrqLine {
    return { setLevel: (high: boolean) => this.setIrq(pin, high) };
  }

  /** The local APIC's EOI broadcast for a level-triggered vector: clears remote IRR. */
  eoi(vector: number): void {
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const low = this.low[pin]!;
      if ((low & 0xff) !== vector || !(low & REDIR_REMOTE_IRR)) continue;
      this.low[pin] = low & ~REDIR_REMOTE_IRR;
      if (this.levels & (1 << pin) && low & REDIR_LEVEL) this.irr |= 1 << pin;
      this.service(pin);
    }
  }

  /** A redirection entry as 64 bits split in two (for tests and `--stats`). */
  entry(pin: number): { low: number; high: number } {
    return { low: this.low[pin] ?? 0, high: this.high[pin] ?? 0 };
  }

  read(offset: number, size: AccessSize): number {
    let value: number;
    if ((offset & ~3) === 0x00) value = this.ioregsel;
    else if ((offset & ~3) === 0x10) value = this.readRegister(this.ioregsel);
    else value = 0;
    if (size === 4) return value >>> 0;
    const shift = (offset & 3) * 8;
    return (value >>> shift) & (size === 1 ? 0xff : 0xffff);
  }

  write(offset: number, size: AccessSize, value: number): void {
    if ((offset & ~3) === 0x00) {
      this.ioregsel = value & 0xff;
      return;
    }
    if ((offset & ~3) === 0x10) {
      if (size !== 4 || (offset & 3) !== 0) {
        this.faults.report(`ignored ${size}-byte IOWIN write at ${hex(offset)}`);
        return;
      }
      this.writeRegister(this.ioregsel, value >>> 0);
    }
  }

  private readRegister(index: number): number {
    switch (index) {
      case 0x00:
        return this.id << 24;
      case 0x01:
        return IOAPIC_VERSION | ((IOAPIC_PINS - 1) << 16);
      case 0x02:
        return this.id << 24;
      default: {
        const pin = (index - 0x10) >> 1;
        if (index < 0x10 || pin >= IOAPIC_PINS) return 0;
        return index & 1 ? this.high[pin]! : this.low[pin]!;
      }
    }
  }

  private writeRegister(index: number, value: number): void {
    if (index === 0x00) {
      this.id = (value >>> 24) & 0x0f;
      return;
    }
    const pin = (index - 0x10) >> 1;
    if (index < 0x10 || pin >= IOAPIC_PINS) return;
    if (index & 1) {
      this.high[pin] = value & 0xff000000;
      return;
    }
    const old = this.low[pin]!;
    // Delivery status and remote IRR are read-only.
    this.low[pin] = (value & ~(REDIR_DELIVERY_STATUS | REDIR_REMOTE_IRR)) | (old & REDIR_REMOTE_IRR);
    const mask = 1 << pin;
    if (!(this.low[pin]! & REDIR_LEVEL)) {
      // Edge: remote IRR has no meaning.
      this.low[pin] = this.low[pin]! & ~REDIR_REMOTE_IRR;
    } else if (this.levels & mask) {
      this.irr |= mask; // switched to level with the line held: requested
    }
    this.service(pin);
  }

  private service(pin: number): void {
    const mask = 1 << pin;
    if (!(this.irr & mask)) return;
    const low = this.low[pin]!;
    if (low & REDIR_MASKED) return;
    const level = (low & REDIR_LEVEL) !== 0;
    if (level) {
      if (low & REDIR_REMOTE_IRR) return;
      this.low[pin] = low | REDIR_REMOTE_IRR;
    }
    this.irr &= ~mask;
    this.stats.delivered++;
    this.sink({
      vector: low & 0xff,
      deliveryMode: (low >> 8) & 7,
      logical: (low & REDIR_LOGICAL) !== 0,
      destination: this.high[pin]! >>> 24,
      level,
    });
  }
}

const IOAPIC_VERSION = 0x11;
const REDIR_LOGICAL = 0x800;
const REDIR_DELIVERY_STATUS = 0x1000;
const REDIR_REMOTE_IRR = 0x4000;
const REDIR_LEVEL = 0x8000;
const REDIR_MASKED = 0x10000;
