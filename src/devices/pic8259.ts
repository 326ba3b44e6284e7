import type { AccessSize, Device, IrqLine } from "../bus/device.js";
import { GuestFaultLog, readBytes, writeBytes } from "./guest_fault_log.js";
import type { InterruptSource } from "./interrupt_source.js";

/**
 * One Intel 8259A programmable interrupt controller (8259A data sheet; the register logic follows
 * QEMU's hw/intc/i8259.c, whose behaviour Linux's arch/x86/kernel/i8259.c is known to run on).
 *
 * Offsets: 0 = command (ICW1, OCW2, OCW3 write; IRR/ISR read per OCW3), 1 = data (ICW2-4, OCW1
 * IMR write; IMR read). Polled mode (OCW3 P) answers the next read with 0x80 | level.
 *
 *   ICW1 (b4 = 1): b0 IC4 (ICW4 follows), b1 SNGL, b3 LTIM (all inputs level-triggered)
 *   ICW2: vector base (b7:3)    ICW3: cascade wiring (ignored: IRQ2 is the cascade on a PC)
 *   ICW4: b1 AEOI, b4 SFNM (special fully nested mode)
 *   OCW2 (b4:3 = 00): b7:5 = R SL EOI: 001 non-specific EOI, 011 specific EOI (b2:0 level),
 *         101 rotate on non-specific EOI, 111 rotate on specific EOI, 110 set priority,
 *         100/000 set/clear rotate in automatic EOI mode
 *   OCW3 (b4:3 = 01): b1:0 = 1x read register select (10 IRR, 11 ISR), b2 poll, b6:5 = 1x special
 *         mask mode (11 set, 10 reset)
 */
class Pic8259Chip {
  irr = 0;
  imr = 0;
  isr = 0;
  /** Input line levels as last seen (for edge detection). */
  lastLevels = 0;
  /** Inputs wired level-triggered by the ELCR (or all of them with ICW1.LTIM). */
  elcr = 0;
  ltim = false;
  priorityAdd = 0;
  irqBase = 0;
  readIsr = false;
  poll = false;
  specialMask = false;
  initState = 0;
  init4 = false;
  single = false;
  autoEoi = false;
  rotateOnAutoEoi = false;
  specialFullyNested = false;

  constructor(
    readonly isMaster: boolean,
    /** Which inputs the ELCR may make level-triggered (PIIX: master 0xf8, slave 0xde). */
    readonly elcrMask: number,
  ) {}

  levelMask(): number {
    return this.ltim ? 0xff : this.elcr;
  }

  setInput(irq: number, level: boolean): void {
    const mask = 1 << irq;
    if (this.levelMask() & mask) {
      if (level) {
        this.irr |= mask;
        this.lastLevels |= mask;
      } else {
        this.irr &= ~mask;
        this.lastLevels &= ~mask;
      }
    } else if (level) {
      if ((this.lastLevels & mask) === 0) this.irr |= mask;
      this.lastLevels |= mask;
    } else {
      this.lastLevels &= ~mask;
    }
  }

  /** Priority rank (0 = highest) of the highest-priority bit of `mask`, 8 if none. */
  priorityOf(mask: number): number {
    if ((mask & 0xff) === 0) return 8;
    let priority = 0;
    while ((mask & (1 << ((priority + this.priorityAdd) & 7))) === 0) priority++;
    return priority;
  }

  /** The input that would be delivered now, or -1. */
  pendingIrq(): number {
    const priority = this.priorityOf(this.irr & ~this.imr);
    if (priority === 8) return -1;
    // In special mask mode, masked in-service levels do not block lower ones; in special fully
    // nested mode the master lets the slave interrupt its own in-service cascade input.
    let inService = this.isr;
    if (this.specialMask) inService &= ~this.imr;
    if (this.specialFullyNested && this.isMaster) inService &= ~(1 << 2);
    const current = this.priorityOf(inService);
    return priority < current ? (priority + this.priorityAdd) & 7 : -1;
  }

  /** The INTA cycle for input `irq`: IRR to ISR (or auto-EOI). */
  acknowledge(irq: number): void {
    const mask = 1 << irq;
    if (this.autoEoi) {
      if (this.rotateOnAutoEoi) this.priorityAdd = (irq + 1) & 7;
    } else {
      this.isr |= mask;
    }
    // A level-triggered request stays in IRR while its line is held.
    if ((this.levelMask() & mask) === 0) this.irr &= ~mask;
  }

  reset(): void {
    this.lastLevels = 0;
    this.irr = 0;
    this.imr = 0;
    this.isr = 0;
    this.priorityAdd = 0;
    this.irqBase = 0;
    this.readIsr = false;
    this.poll = false;
    this.specialMask = false;
    this.initState = 0;
    this.init4 = false;
    this.single = false;
    this.ltim = false;
    this.autoEoi = false;
    this.rotateOnAutoEoi = false;
    this.specialFullyNested = false;
  }
}

/**
 * The PC's cascaded 8259A pair: master at PIC_MASTER_PORT (0x20, IRQ 0-7), slave at
 * PIC_SLAVE_PORT (0xa0, IRQ 8-15) on the master's IRQ2, and the PIIX ELCR at ELCR_PORT (0x4d0
 * master, 0x4d1 slave; b = 1 makes that input level-triggered; IRQ 0, 1, 2, 8, 13 are always edge).
 *
 * For the CPU it is an InterruptSource (the INTR pin and INTA cycle). With a local APIC, the APIC
 * consumes it through LINT0 in ExtINT mode instead (lapic.ts). A spurious INTA (the request went
 * away) returns IRQ7's vector (master) or IRQ15's (slave) with nothing put in service, as the
 * real chips do.
 */
export class Pic8259Pair implements InterruptSource {
  /** Ports 0x20-0x21. */
  readonly master: Device;
  /** Ports 0xa0-0xa1. */
  readonly slave: Device;
  /** Ports 0x4d0-0x4d1. */
  readonly elcr: Device;
  readonly faults = new GuestFaultLog("pic8259");
  readonly stats = { acknowledged: 0, spurious: 0 };
  /** Called when the INTR output changes (a platform may use it instead of polling). */
  onOutputChange: ((high: boolean) => void) | undefined;

  private readonly chips: [Pic8259Chip, Pic8259Chip] = [
    new Pic8259Chip(true, 0xf8),
    new Pic8259Chip(false, 0xde),
  ];
  private output = false;

  constructor() {
    this.master = this.chipDevice(0, "pic8259-master");
    this.slave = this.chipDevice(1, "pic8259-slave");
    this.elcr = {
      name: "elcr",
      read: (offset: number, size: AccessSize) => this.readElcr(offset, size),
      write: (offset: number, size: AccessSize, value: number) => this.writeElcr(offset, size, value),
    };
  }

  /** Drives input `irq` (0-15) of the pair; values outside 0-15 are ignored. */
  setIrq(irq: number, level: boolean): void {
    if (irq < 0 || irq > 15) return;
    this.chips[irq >> 3]!.setInput(irq & 7, level);
    this.update();
  }

  /** An IrqLine for input `irq` (0-15). */
  line(irq: number): IrqLine {
    return { setLevel: (high: boolean) => this.setIrq(irq, high) };
  }

  /** The INTR output: a request the CPU would take (EFLAGS.IF is the CPU's business). */
  hasInterrupt(): boolean {
    return this.output;
  }

  /** The INTA cycle: the vector to dispatch, with IRR and ISR updated. */
  acknowledgeInterrupt(): number {
    const [master, slave] = this.chips;
    let vector: number;
    const irq = master.pendingIrq();
    if (irq >= 0) {
      master.acknowledge(irq);
      if (irq === 2) {
        const irq2 = slave.pendingIrq();
        if (irq2 >= 0) {
          slave.acknowledge(irq2);
          vector = slave.irqBase + irq2;
        } else {
          this.stats.spurious++;
          vector = slave.irqBase + 7;
        }
      } else {
        vector = master.irqBase + irq;
      }
      this.stats.acknowledged++;
    } else {
      this.stats.spurious++;
      vector = master.irqBase + 7;
    }
    this.update();
    return vector;
  }

  /** Mask, request and in-service registers of both chips (for tests and `--stats`). */
  state(): { imr: number; irr: number; isr: number; vectorBase: [number, number] } {
    const [m, s] = this.chips;
    return {
      imr: m.imr | (s.imr << 8),
      irr: m.irr | (s.irr << 8),
      isr: m.isr | (s.isr << 8),
      vectorBase: [m.irqBase, s.irqBase],
    };
  }

  private update(): void {
    const [master, slave] = this.chips;
    // The slave's INT output is wired to master IR2; a pulse gives the master an edge for each
    // slave request (QEMU does the same), level-triggering is not an option for IR2 anyway.
    const slavePending = slave.pendingIrq() >= 0;
    if (master.levelMask() & 0x04) {
      master.setInput(2, slavePending); // ICW1.LTIM on the master
    } else if (slavePending) {
      master.setInput(2, true);
      master.setInput(2, false);
    }
    const output = master.pendingIrq() >= 0;
    if (output !== this.output) {
      this.output = output;
      this.onOutputChange?.(output);
    }
  }

  private chipDevice(index: 0 | 1, name: string): Device {
    return {
      name,
      read: (offset: number, size: AccessSize) => readBytes((o) => this.readChip(index, o), offset, size, 2),
      write: (offset: number, size: AccessSize, value: number) =>
        writeBytes((o, v) => this.writeChip(index, o, v), offset, size, value, 2),
    };
  }

  private readChip(index: 0 | 1, port: number): number {
    const chip = this.chips[index]!;
    if (chip.poll) {
      chip.poll = false;
      const irq = chip.pendingIrq();
      if (irq < 0) return 0;
      chip.acknowledge(irq);
      this.update();
      return 0x80 | irq;
    }
    if (port === 0) return chip.readIsr ? chip.isr : chip.irr;
    return chip.imr;
  }

  private writeChip(index: 0 | 1, port: number, value: number): void {
    const chip = this.chips[index]!;
    if (port === 0) {
      if (value & 0x10) {
        // ICW1: reset the chip and start the initialization sequence (the ELCR survives).
        chip.reset();
        chip.initState = 1;
        chip.init4 = (value & 1) !== 0;
        chip.single = (value & 2) !== 0;
        chip.ltim = (value & 8) !== 0;
        if (value & 0x04) this.faults.report("ICW1 ADI (8080 call interval) ignored");
      } else if (value & 0x08) {
        // OCW3
        if (value & 0x04) chip.poll = true;
        if (value & 0x02) chip.readIsr = (value & 1) !== 0;
        if (value & 0x40) chip.specialMask = (value & 0x20) !== 0;
      } else {
        // OCW2
        const command = value >> 5;
        switch (command) {
          case 0:
          case 4:
            chip.rotateOnAutoEoi = command === 4;
            break;
          case 1:
          case 5: {
            const priority = chip.priorityOf(chip.isr);
            if (priority !== 8) {
              const irq = (priority + chip.priorityAdd) & 7;
              chip.isr &= ~(1 << irq);
              if (command === 5) chip.priorityAdd = (irq + 1) & 7;
            }
            break;
          }
          case 3:
            chip.isr &= ~(1 << (value & 7));
            break;
          case 6:
            chip.priorityAdd = (value + 1) & 7;
            break;
          case 7: {
            const irq = value & 7;
            chip.isr &= ~(1 << irq);
            chip.priorityAdd = (irq + 1) & 7;
            break;
          }
          default:
            break; // 2: no operation
        }
      }
      this.update();
      return;
    }
    switch (chip.initState) {
      case 0:
        chip.imr = value; // OCW1
        break;
      case 1:
        chip.irqBase = value & 0xf8;
        chip.initState = chip.single ? (chip.init4 ? 3 : 0) : 2;
        break;
      case 2:
        chip.initState = chip.init4 ? 3 : 0; // ICW3: the wiring is fixed
        break;
      default:
        if (!(value & 1)) this.faults.report("ICW4 selects 8080 mode; x86 mode assumed");
        chip.specialFullyNested = (value & 0x10) !== 0;
        chip.autoEoi = (value & 0x02) !== 0;
        chip.initState = 0;
        break;
    }
    this.update();
  }

  private readElcr(offset: number, size: AccessSize): number {
    const lo = offset === 0 ? this.chips[0].elcr : this.chips[1].elcr;
    if (size === 1) return lo;
    const value = offset === 0 ? lo | (this.chips[1].elcr << 8) : lo | 0xff00;
    return size === 2 ? value : (value | 0xffff0000) >>> 0;
  }

  private writeElcr(offset: number, size: AccessSize, value: number): void {
    for (let i = 0; i < size && offset + i < 2; i++) {
      const chip = this.chips[offset + i]!;
      chip.elcr = (value >>> (8 * i)) & chip.elcrMask;
    }
    this.update();
  }
}
