import type { IrqLine } from "../bus/device.js";
import type { MmioBus } from "../bus/mmio_bus.js";
import type { PortBus } from "../bus/port_bus.js";
import {
  APIC_START,
  ELCR_PORT,
  IOAPIC_START,
  PIC_MASTER_PORT,
  PIC_SLAVE_PORT,
  PIT_PORT,
  RTC_IRQ,
  RTC_PORT,
  SYSTEM_CONTROL_PORT_B,
} from "../memory/layout.js";
import type { InterruptSource, NmiSource, VirtualClock } from "./interrupt_source.js";
import { IOAPIC_PINS, IoApic } from "./ioapic.js";
import { LAPIC_BUS_HZ, LocalApic } from "./lapic.js";
import { Pic8259Pair } from "./pic8259.js";
import { Pit8254 } from "./pit8254.js";
import { CmosRtc } from "./rtc.js";

/** MSRs the platform answers for the CPU (Intel SDM vol. 4). */
export const MSR_IA32_TSC = 0x10;
export const MSR_IA32_APIC_BASE = 0x1b;
export const MSR_IA32_TSC_DEADLINE = 0x6e0;

export interface PcPlatformOptions {
  clock: VirtualClock;
  /**
   * Local APIC and IOAPIC present (default true). false builds a PIC-only machine: the CPU
   * takes the 8259's INTR directly, and the CPU must not advertise an APIC in CPUID.
   */
  apic?: boolean;
  /** TSC frequency the CPU advertises (default 1 GHz: the TSC counts clock nanoseconds). */
  tscHz?: number;
  /** Offer the APIC timer's TSC-deadline mode (the CPU then sets CPUID.01H:ECX[24]). */
  tscDeadline?: boolean;
  /** Wall-clock time (ms since 1970) at clock time 0, for the RTC; default: now. */
  epochMs?: number;
}

/**
 * The PC chipset the software engine needs and KVM keeps in the kernel: an 8259 pair, an 8254
 * PIT on ISA IRQ0, the CMOS RTC on IRQ8, and (unless `apic: false`) an IOAPIC and the boot CPU's
 * local APIC, wired as on a PC and as Vessel's MP table and MADT describe it (src/boot/):
 *
 *   ISA IRQ n (1-15, not 2) -> 8259 input n and IOAPIC pin n
 *   ISA IRQ 0 (PIT)         -> 8259 input 0 and IOAPIC pin 2 (MADT override IRQ0 -> GSI2)
 *   8259 INTR               -> IOAPIC pin 0 (ExtINT) and the local APIC's LINT0 (ExtINT)
 *   GSI 16-23               -> IOAPIC only
 *   IOAPIC, self-IPIs       -> local APIC -> the CPU; level EOIs go back to the IOAPIC
 *
 * Devices outside the chipset (UART, i8042, virtio) get their lines from `irqLine(irq)`; the
 * machine assembly registers them. The UART, i8042, debug-exit port are not part of this set.
 *
 * The CPU loop (soft engine) uses it like this:
 *   - between instruction slices: `if (clock.nowNs() >= p.nextDeadlineNs()) p.advance(now)`,
 *     then `if (IF && p.hasInterrupt()) vector = p.acknowledgeInterrupt()` and `p.hasNmi()`;
 *   - on HLT with IF=1: sleep until `nextDeadlineNs()` (or until a device raises a line from
 *     outside, e.g. console input), then `advance()`;
 *   - RDTSC: `tsc(clock.nowNs())`; RDMSR/WRMSR of IA32_TSC, IA32_APIC_BASE, IA32_TSC_DEADLINE:
 *     `readMsr` / `writeMsr` (they return undefined / false for any other MSR).
 * Everything runs in the machine worker's thread; nothing here is thread-safe.
 */
export class PcPlatform implements InterruptSource, NmiSource {
  readonly clock: VirtualClock;
  readonly pic: Pic8259Pair;
  readonly pit: Pit8254;
  readonly rtc: CmosRtc;
  /** Undefined in a PIC-only machine. */
  readonly ioapic: IoApic | undefined;
  readonly lapic: LocalApic | undefined;
  /** The TSC frequency the CPU must advertise. */
  readonly tscHz: number;
  /** The local APIC timer's input frequency (before its divider): LAPIC_BUS_HZ. */
  readonly apicBusHz = LAPIC_BUS_HZ;

  /** TSC = clock ns * tscHz / 1e9 + tscOffset; WRMSR IA32_TSC moves the offset. */
  private tscOffset = 0n;
  /** Per line: which of its sources assert it (shared lines are the OR of their sources). */
  private readonly lineSources = new Map<number, { asserted: number; sources: number }>();

  constructor(options: PcPlatformOptions) {
    this.clock = options.clock;
    this.tscHz = options.tscHz ?? 1e9;
    this.pic = new Pic8259Pair();
    const withApic = options.apic ?? true;
    if (withApic) {
      const lapic = new LocalApic({
        clock: this.clock,
        id: 0,
        extInt: this.pic,
        ...(options.tscDeadline === true ? { nsFromTsc: (tsc: bigint) => this.nsFromTsc(tsc) } : {}),
      });
      const ioapic = new IoApic((message) => lapic.deliver(message));
      lapic.onEoi = (vector) => ioapic.eoi(vector);
      // The 8259's INTR also reaches IOAPIC pin 0 (ExtINT), as on a PIIX PC.
      this.pic.onOutputChange = (high) => ioapic.setIrq(0, high);
      this.lapic = lapic;
      this.ioapic = ioapic;
    } else {
      this.lapic = undefined;
      this.ioapic = undefined;
    }
    this.pit = new Pit8254(this.clock, this.irqLine(0));
    this.rtc = new CmosRtc(this.irqLine(RTC_IRQ), this.clock, options.epochMs);
  }

  /**
   * Registers the chipset: PIC (0x20, 0xa0), ELCR (0x4d0), PIT (0x40) and port 0x61, RTC (0x70);
   * with an APIC, the IOAPIC (IOAPIC_START) and the local APIC (APIC_START), 4 KiB each.
   */
  attach(ports: PortBus, mmio: MmioBus): void {
    ports.register(PIC_MASTER_PORT, 2, this.pic.master);
    ports.register(PIC_SLAVE_PORT, 2, this.pic.slave);
    ports.register(ELCR_PORT, 2, this.pic.elcr);
    ports.register(PIT_PORT, 4, this.pit);
    ports.register(SYSTEM_CONTROL_PORT_B, 1, this.pit.portB);
    ports.register(RTC_PORT, 2, this.rtc);
    if (this.ioapic !== undefined) mmio.register(IOAPIC_START, 0x1000, this.ioapic);
    if (this.lapic !== undefined) mmio.register(APIC_START, 0x1000, this.lapic);
  }

  /**
   * A new interrupt source on ISA IRQ `irq` (0-15, not 2: the cascade) or GSI 16-23, wired as on
   * a PC (see the class comment). Several sources may share a line: the line is asserted while
   * any of them asserts it (wired-OR, like PCI INTx sharing), so each device gets its own
   * IrqLine. Throws on a number that is not an interrupt line (a wiring bug, not a guest's).
   */
  irqLine(irq: number): IrqLine {
    if (!Number.isInteger(irq) || irq < 0 || irq >= IOAPIC_PINS || irq === 2) {
      throw new RangeError(`IRQ ${irq} is not a device interrupt line (0-23, not the cascade IRQ 2)`);
    }
    let state = this.lineSources.get(irq);
    if (state === undefined) {
      state = { asserted: 0, sources: 0 };
      this.lineSources.set(irq, state);
    }
    if (state.sources >= 31) throw new RangeError(`too many devices share IRQ ${irq}`);
    const bit = 1 << state.sources++;
    const line = state;
    const pin = irq === 0 ? 2 : irq;
    return {
      setLevel: (high: boolean) => {
        const before = line.asserted !== 0;
        if (high) line.asserted |= bit;
        else line.asserted &= ~bit;
        const after = line.asserted !== 0;
        if (before === after) return;
        this.drive(irq, pin, after);
      },
    };
  }

  private drive(irq: number, pin: number, level: boolean): void {
    if (irq < 16) this.pic.setIrq(irq, level);
    this.ioapic?.setIrq(pin, level);
  }

  // ---- InterruptSource (the CPU's INTR / INTA), NMI ----

  hasInterrupt(): boolean {
    return this.lapic !== undefined ? this.lapic.hasInterrupt() : this.pic.hasInterrupt();
  }

  acknowledgeInterrupt(): number {
    return this.lapic !== undefined ? this.lapic.acknowledgeInterrupt() : this.pic.acknowledgeInterrupt();
  }

  hasNmi(): boolean {
    return this.lapic?.hasNmi() ?? false;
  }

  acknowledgeNmi(): void {
    this.lapic?.acknowledgeNmi();
  }

  // ---- timers ----

  /** The earliest clock time at which a timer (PIT, RTC, APIC timer) needs `advance()`. */
  nextDeadlineNs(): number {
    let next = this.pit.nextDeadlineNs();
    const rtc = this.rtc.nextDeadlineNs();
    if (rtc < next) next = rtc;
    if (this.lapic !== undefined) {
      const lapic = this.lapic.nextDeadlineNs();
      if (lapic < next) next = lapic;
    }
    return next;
  }

  /** Fires every timer due by `nowNs` (missed periods coalesce, as on real hardware). */
  advance(nowNs: number = this.clock.nowNs()): void {
    this.pit.advance(nowNs);
    this.rtc.advance(nowNs);
    this.lapic?.advance(nowNs);
  }

  // ---- TSC and MSRs ----

  /** The TSC at clock time `nowNs`. */
  tsc(nowNs: number): bigint {
    return BigInt(Math.floor((nowNs * this.tscHz) / 1e9)) + this.tscOffset;
  }

  /** The clock time at which the TSC reads `tsc` (for TSC-deadline). */
  nsFromTsc(tsc: bigint): number {
    return (Number(tsc - this.tscOffset) * 1e9) / this.tscHz;
  }

  /** RDMSR of a platform MSR, or undefined when the MSR is not the platform's. */
  readMsr(index: number): bigint | undefined {
    switch (index) {
      case MSR_IA32_TSC:
        return BigInt.asUintN(64, this.tsc(this.clock.nowNs()));
      case MSR_IA32_APIC_BASE:
        return this.lapic === undefined ? undefined : BigInt(this.lapic.readApicBase());
      case MSR_IA32_TSC_DEADLINE:
        return this.lapic === undefined ? undefined : this.lapic.readTscDeadline();
      default:
        return undefined;
    }
  }

  /** WRMSR of a platform MSR; false when the MSR is not the platform's (the CPU raises #GP). */
  writeMsr(index: number, value: bigint): boolean {
    switch (index) {
      case MSR_IA32_TSC: {
        const now = BigInt(Math.floor((this.clock.nowNs() * this.tscHz) / 1e9));
        this.tscOffset = BigInt.asUintN(64, value) - now;
        return true;
      }
      case MSR_IA32_APIC_BASE:
        if (this.lapic === undefined) return false;
        this.lapic.writeApicBase(Number(BigInt.asUintN(32, value)));
        return true;
      case MSR_IA32_TSC_DEADLINE:
        if (this.lapic === undefined) return false;
        this.lapic.writeTscDeadline(value);
        return true;
      default:
        return false;
    }
  }
}
