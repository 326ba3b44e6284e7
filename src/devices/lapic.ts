import type { AccessSize, Device } from "../bus/device.js";
import { APIC_START } from "../memory/layout.js";
import { GuestFaultLog, hex } from "./guest_fault_log.js";
import type { InterruptSource, NmiSource, VirtualClock } from "./interrupt_source.js";

/**
 * The local APIC timer counts at this "bus" frequency before the divider: 1 GHz, one tick per
 * nanosecond of the machine clock (what KVM's in-kernel LAPIC uses). A soft CPU that advertises
 * the frequency (CPUID 0x15/0x16 or KVM's 0x40000010) must advertise this value.
 */
export const LAPIC_BUS_HZ = 1e9;

/** An interrupt message as the IOAPIC (or an MSI, or an IPI) sends it on the APIC bus. */
export interface ApicMessage {
  vector: number;
  /** 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 6 start-up, 7 ExtINT. */
  deliveryMode: number;
  /** Logical (true) or physical (false) destination mode. */
  logical: boolean;
  /** Destination APIC ID (physical) or logical mask (8 bits). */
  destination: number;
  /** Level-triggered: the vector's TMR bit is set and its EOI is broadcast (`onEoi`). */
  level: boolean;
}

/** Options of a local APIC. */
export interface LocalApicOptions {
  clock: VirtualClock;
  /** APIC ID (bits 31:24 of the ID register); 0 for the boot CPU. */
  id?: number;
  /** The 8259 pair behind LINT0 (ExtINT), asked for its vector in the INTA cycle. */
  extInt?: InterruptSource;
  /**
   * Converts a TSC value to clock ns, for the TSC-deadline timer mode. Without it, TSC-deadline
   * mode is not offered (LVT timer mode 10b reads back as one-shot).
   */
  nsFromTsc?: (tsc: bigint) => number;
}

/**
 * A local APIC (xAPIC mode, one CPU) at APIC_START, 4 KiB of MMIO (Intel SDM vol. 3A ch. 10).
 * Register offsets (all 32-bit, 16-byte aligned; other sizes and alignments are ignored, as KVM
 * does):
 *   0x020 ID (b31:24)    0x030 version (0x00050014: version 0x14, 6 LVT entries)
 *   0x080 TPR  0x090 APR  0x0a0 PPR  0x0b0 EOI  0x0d0 LDR (b31:24)  0x0e0 DFR (b31:28)
 *   0x0f0 SVR: b7:0 spurious vector, b8 APIC software enable, b9 focus check disable
 *   0x100-0x170 ISR, 0x180-0x1f0 TMR, 0x200-0x270 IRR (256 bits each, 32 per register)
 *   0x280 ESR (a write latches the errors seen since the last write)
 *   0x300 ICR low: b7:0 vector, b10:8 delivery mode, b11 logical, b14 level, b15 trigger,
 *         b19:18 shorthand (01 self, 10 all incl. self, 11 all excl. self); 0x310 ICR high b31:24
 *   0x320 LVT timer: b17:18 mode (00 one-shot, 01 periodic, 10 TSC-deadline), b16 mask
 *   0x330 LVT thermal  0x340 LVT perf  0x350 LVT LINT0  0x360 LVT LINT1  0x370 LVT error
 *   0x380 timer initial count  0x390 current count  0x3e0 divide configuration (b3, b1:0)
 *
 * For the CPU it is the InterruptSource: fixed interrupts by priority against PPR, and the
 * 8259's vector when LINT0 is in ExtINT mode (or the APIC is hardware-disabled through
 * IA32_APIC_BASE, which makes INTR go straight to the CPU). At reset LINT0 is ExtINT and LINT1
 * NMI, unmasked, as a PC BIOS leaves the boot CPU ("virtual wire" mode; KVM does the same), so a
 * guest that never touches the APIC still gets the PIC's interrupts.
 *
 * One CPU: INIT and start-up IPIs to other CPUs are counted and ignored.
 */
export class LocalApic implements Device, InterruptSource, NmiSource {
  readonly name = "lapic";
  readonly faults = new GuestFaultLog("lapic");
  readonly stats = { delivered: 0, timerFired: 0, spurious: 0, nmis: 0, ipisIgnored: 0 };
  /** Level-triggered EOI broadcast (to the IOAPIC's remote IRR), with the vector. */
  onEoi: ((vector: number) => void) | undefined;
  /** The 8259 pair behind LINT0 (set after construction if the PIC is built later). */
  extInt: InterruptSource | undefined;

  private readonly clock: VirtualClock;
  private readonly nsFromTsc: ((tsc: bigint) => number) | undefined;
  private readonly irr = new Uint32Array(8);
  private readonly isr = new Uint32Array(8);
  private readonly tmr = new Uint32Array(8);
  private id: number;
  private apicBase: number;
  private tpr = 0;
  private ldr = 0;
  private dfr = 0xffffffff;
  private svr = 0xff;
  private esr = 0;
  private esrPending = 0;
  private icrLow = 0;
  private icrHigh = 0;
  private readonly lvt = new Uint32Array(6); // timer, thermal, perf, LINT0, LINT1, error
  private divideConfig = 0;
  private initialCount = 0;
  private timerLoadNs = 0;
  /** Timer periods already delivered since the load (one-shot: 0 or 1). */
  private timerFired = 0;
  private tscDeadline = 0n;
  private tscDeadlineNs = Number.POSITIVE_INFINITY;
  private nmiPending = 0;
  private lint1Level = false;
  /** An ExtINT message (from the IOAPIC) waits for the INTA cycle. */
  private extIntMessage = false;

  constructor(options: LocalApicOptions) {
    this.clock = options.clock;
    this.id = options.id ?? 0;
    this.extInt = options.extInt;
    this.nsFromTsc = options.nsFromTsc;
    this.apicBase = (APIC_START | APIC_BASE_ENABLE | (this.id === 0 ? APIC_BASE_BSP : 0)) >>> 0;
    this.resetRegisters();
  }

  private resetRegisters(): void {
    this.irr.fill(0);
    this.isr.fill(0);
    this.tmr.fill(0);
    this.tpr = 0;
    this.ldr = 0;
    this.dfr = 0xffffffff;
    this.svr = 0xff;
    this.esr = 0;
    this.esrPending = 0;
    this.icrLow = 0;
    this.icrHigh = 0;
    this.lvt.fill(LVT_MASKED);
    // Virtual wire, as a BIOS leaves the boot CPU: PIC through LINT0, NMI through LINT1.
    this.lvt[LVT_LINT0] = DM_EXTINT << 8;
    this.lvt[LVT_LINT1] = DM_NMI << 8;
    this.divideConfig = 0;
    this.initialCount = 0;
    this.timerFired = 0;
    this.tscDeadline = 0n;
    this.tscDeadlineNs = Number.POSITIVE_INFINITY;
    this.extIntMessage = false;
  }

  // ---- the CPU side ----

  /** INTR: a fixed interrupt above PPR, or an ExtINT from the 8259. */
  hasInterrupt(): boolean {
    if (this.extIntPending()) return true;
    if (!this.hwEnabled()) return false;
    const irrv = highest(this.irr);
    return irrv >= 0 && (irrv & 0xf0) > (this.ppr() & 0xf0);
  }

  /** INTA: the vector, moved from IRR to ISR (the 8259's vector for ExtINT; SVR's if spurious). */
  acknowledgeInterrupt(): number {
    if (this.extIntPending()) {
      this.extIntMessage = false;
      return this.extInt!.acknowledgeInterrupt();
    }
    const irrv = highest(this.irr);
    if (!this.hwEnabled() || irrv < 0 || (irrv & 0xf0) <= (this.ppr() & 0xf0)) {
      this.stats.spurious++;
      return this.svr & 0xff;
    }
    clearBit(this.irr, irrv);
    setBit(this.isr, irrv);
    this.stats.delivered++;
    return irrv;
  }

  /** A pending NMI (from LINT1, an NMI IPI or an NMI message). */
  hasNmi(): boolean {
    return this.nmiPending > 0;
  }

  /** The CPU takes the NMI (vector 2). */
  acknowledgeNmi(): void {
    if (this.nmiPending > 0) this.nmiPending--;
  }

  /** IA32_APIC_BASE (MSR 0x1b): b8 BSP, b11 enable, b35:12 base (fixed at APIC_START here). */
  readApicBase(): number {
    return this.apicBase;
  }

  writeApicBase(value: number): void {
    const base = (value & 0xfffff000) >>> 0;
    if (base !== APIC_START) this.faults.report(`APIC base relocation to ${hex(base)} not supported`);
    const wasEnabled = this.hwEnabled();
    this.apicBase = (APIC_START | (this.apicBase & APIC_BASE_BSP) | (value & APIC_BASE_ENABLE)) >>> 0;
    // Disabling and re-enabling puts the APIC in its power-up state (SDM 10.4.3).
    if (wasEnabled && !this.hwEnabled()) {
      this.resetRegisters();
      this.lvt.fill(LVT_MASKED);
    }
  }

  /** IA32_TSC_DEADLINE (MSR 0x6e0). */
  readTscDeadline(): bigint {
    return this.timerMode() === TIMER_TSC_DEADLINE ? this.tscDeadline : 0n;
  }

  writeTscDeadline(value: bigint): void {
    if (this.timerMode() !== TIMER_TSC_DEADLINE || this.nsFromTsc === undefined) return;
    this.tscDeadline = BigInt.asUintN(64, value);
    this.tscDeadlineNs = value === 0n ? Number.POSITIVE_INFINITY : this.nsFromTsc(this.tscDeadline);
    this.advance(this.clock.nowNs());
  }

  /** Whether TSC-deadline mode is offered (for the CPU's CPUID.01H:ECX[24]). */
  get tscDeadlineSupported(): boolean {
    return this.nsFromTsc !== undefined;
  }

  // ---- the interrupt controllers' side ----

  /** Whether a message to `destination` in this mode reaches this APIC. */
  matches(destination: number, logical: boolean): boolean {
    if (!logical) return destination === 0xff || destination === this.id;
    if (destination === 0xff) return true;
    const ldr = this.ldr >>> 24;
    if (this.dfr >>> 28 === 0xf) return (ldr & destination) !== 0; // flat model
    // Cluster model: cluster in b7:4 must match, one of the b3:0 members.
    return (ldr & 0xf0) === (destination & 0xf0) && (ldr & destination & 0x0f) !== 0;
  }

  /** Accepts a message from the IOAPIC, an MSI or an IPI, if addressed to this APIC. */
  deliver(message: ApicMessage): void {
    if (!this.hwEnabled()) return;
    if (!this.matches(message.destination, message.logical)) return;
    this.accept(message.deliveryMode, message.vector, message.level);
  }

  /** LINT1 pin (NMI on a PC). A rising edge in NMI mode raises an NMI. */
  setLint1(level: boolean): void {
    const rising = level && !this.lint1Level;
    this.lint1Level = level;
    const lvt = this.lvt[LVT_LINT1]!;
    if (!rising || lvt & LVT_MASKED) return;
    this.accept((lvt >> 8) & 7, lvt & 0xff, false);
  }

  // ---- timers ----

  /** When the APIC timer next fires (clock ns), or Infinity. */
  nextDeadlineNs(): number {
    const lvt = this.lvt[LVT_TIMER]!;
    if (lvt & LVT_MASKED || !this.hwEnabled()) return Number.POSITIVE_INFINITY;
    const mode = this.timerMode();
    if (mode === TIMER_TSC_DEADLINE) return this.tscDeadlineNs;
    if (this.initialCount === 0) return Number.POSITIVE_INFINITY;
    if (mode === TIMER_ONESHOT && this.timerFired > 0) return Number.POSITIVE_INFINITY;
    const period = this.initialCount * this.divisor();
    return this.timerLoadNs + (this.timerFired + 1) * period;
  }

  /** Fires the timer if due by `nowNs` (several missed periods coalesce into one interrupt). */
  advance(nowNs: number = this.clock.nowNs()): void {
    const mode = this.timerMode();
    let fire = false;
    if (mode === TIMER_TSC_DEADLINE) {
      if (nowNs >= this.tscDeadlineNs) {
        this.tscDeadlineNs = Number.POSITIVE_INFINITY;
        this.tscDeadline = 0n;
        fire = true;
      }
    } else if (this.initialCount !== 0) {
      const periods = Math.floor((nowNs - this.timerLoadNs) / (this.initialCount * this.divisor()));
      if (mode === TIMER_ONESHOT) {
        if (periods >= 1 && this.timerFired === 0) {
          this.timerFired = 1;
          fire = true;
        }
      } else if (periods > this.timerFired) {
        this.timerFired = periods;
        fire = true;
      }
    }
    const lvt = this.lvt[LVT_TIMER]!;
    if (fire && !(lvt & LVT_MASKED) && this.hwEnabled()) {
      this.stats.timerFired++;
      this.acceptFixed(lvt & 0xff, false);
    }
  }

  // ---- Device (MMIO) ----

  read(offset: number, size: AccessSize): number {
    const value = this.readRegister(offset & 0xff0);
    if (size === 4 && (offset & 0xf) === 0) return value >>> 0;
    const shift = (offset & 3) * 8;
    if ((offset & 0xf) > 3) return 0;
    const mask = size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff;
    return ((value >>> shift) & mask) >>> 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size !== 4 || (offset & 0xf) !== 0) {
      this.faults.report(`ignored ${size}-byte write at offset ${hex(offset)} (APIC registers are 32-bit)`);
      return;
    }
    this.writeRegister(offset, value >>> 0);
  }

  private readRegister(reg: number): number {
    if (reg >= 0x100 && reg < 0x280) {
      const bank = reg < 0x180 ? this.isr : reg < 0x200 ? this.tmr : this.irr;
      return bank[((reg - 0x100) >> 4) & 7]!;
    }
    switch (reg) {
      case 0x020:
        return (this.id << 24) >>> 0;
      case 0x030:
        return APIC_VERSION;
      case 0x080:
        return this.tpr;
      case 0x090:
        return 0;
      case 0x0a0:
        return this.ppr();
      case 0x0d0:
        return this.ldr;
      case 0x0e0:
        return this.dfr;
      case 0x0f0:
        return this.svr;
      case 0x280:
        return this.esr;
      case 0x300:
        return this.icrLow & ~ICR_DELIVERY_STATUS;
      case 0x310:
        return this.icrHigh;
      case 0x320:
      case 0x330:
      case 0x340:
      case 0x350:
      case 0x360:
      case 0x370:
        return this.lvt[(reg - 0x320) >> 4]!;
      case 0x380:
        return this.initialCount;
      case 0x390:
        return this.currentCount(this.clock.nowNs());
      case 0x3e0:
        return this.divideConfig;
      default:
        return 0;
    }
  }

  private writeRegister(reg: number, value: number): void {
    switch (reg) {
      case 0x020:
        this.id = value >>> 24;
        return;
      case 0x080:
        this.tpr = value & 0xff;
        return;
      case 0x0b0:
        this.eoi();
        return;
      case 0x0d0:
        this.ldr = value & 0xff000000;
        return;
      case 0x0e0:
        this.dfr = (value | 0x0fffffff) >>> 0;
        return;
      case 0x0f0: {
        this.svr = value & 0x3ff;
        if (!(this.svr & SVR_ENABLE)) {
          // Software disable masks every LVT entry (SDM 10.4.7.2).
          for (let i = 0; i < 6; i++) this.lvt[i] = this.lvt[i]! | LVT_MASKED;
        }
        return;
      }
      case 0x280:
        this.esr = this.esrPending;
        this.esrPending = 0;
        return;
      case 0x300:
        this.icrLow = value & 0x000ccfff;
        this.sendIpi();
        return;
      case 0x310:
        this.icrHigh = value & 0xff000000;
        return;
      case 0x320:
      case 0x330:
      case 0x340:
      case 0x350:
      case 0x360:
      case 0x370:
        this.writeLvt((reg - 0x320) >> 4, value);
        return;
      case 0x380: {
        if (this.timerMode() === TIMER_TSC_DEADLINE) return;
        this.initialCount = value;
        this.timerLoadNs = this.clock.nowNs();
        this.timerFired = 0;
        return;
      }
      case 0x3e0: {
        const now = this.clock.nowNs();
        const current = this.currentCount(now);
        this.divideConfig = value & 0x0b;
        // Keep the count where it is; it goes on at the new rate.
        if (this.initialCount !== 0 && current !== 0) {
          this.timerLoadNs = now - (this.initialCount - current) * this.divisor();
          this.timerFired = 0;
        }
        return;
      }
      default:
        // Read-only or reserved registers (ID of version, PPR, ISR, ...): writes do nothing.
        return;
    }
  }

  private writeLvt(index: number, value: number): void {
    let v = value & LVT_WRITABLE[index]!;
    if (!(this.svr & SVR_ENABLE)) v |= LVT_MASKED;
    if (index === LVT_TIMER) {
      let mode = (v >> 17) & 3;
      if (mode === TIMER_TSC_DEADLINE && this.nsFromTsc === undefined) mode = TIMER_ONESHOT;
      if (mode === 3) mode = TIMER_ONESHOT;
      v = (v & ~(3 << 17)) | (mode << 17);
      if (mode !== this.timerMode()) {
        // Changing the timer mode disarms the timer (SDM 10.5.4.1).
        this.initialCount = 0;
        this.timerFired = 0;
        this.tscDeadline = 0n;
        this.tscDeadlineNs = Number.POSITIVE_INFINITY;
      }
    }
    if (index === LVT_LINT0 || index === LVT_LINT1) {
      v |= this.lvt[index]! & LVT_REMOTE_IRR;
    }
    this.lvt[index] = v;
  }

  // ---- internals ----

  private hwEnabled(): boolean {
    return (this.apicBase & APIC_BASE_ENABLE) !== 0;
  }

  private timerMode(): number {
    return (this.lvt[LVT_TIMER]! >> 17) & 3;
  }

  private divisor(): number {
    const v = (this.divideConfig & 3) | ((this.divideConfig >> 1) & 4);
    return 1 << ((v + 1) & 7);
  }

  private currentCount(nowNs: number): number {
    if (this.initialCount === 0 || this.timerMode() === TIMER_TSC_DEADLINE) return 0;
    const ticks = Math.floor((nowNs - this.timerLoadNs) / this.divisor());
    if (this.timerMode() === TIMER_PERIODIC) return this.initialCount - (ticks % this.initialCount);
    return ticks >= this.initialCount ? 0 : this.initialCount - ticks;
  }

  /** PPR = max(TPR, ISRV) by priority class (SDM 10.8.3.1). */
  private ppr(): number {
    const isrv = highest(this.isr);
    const isrClass = isrv < 0 ? 0 : isrv & 0xf0;
    return (this.tpr & 0xf0) >= isrClass ? this.tpr : isrClass;
  }

  private extIntPending(): boolean {
    const pic = this.extInt;
    if (pic === undefined || !pic.hasInterrupt()) {
      this.extIntMessage = false; // the request behind an ExtINT message went away
      return false;
    }
    if (!this.hwEnabled() || this.extIntMessage) return true;
    const lint0 = this.lvt[LVT_LINT0]!;
    return (lint0 & LVT_MASKED) === 0 && ((lint0 >> 8) & 7) === DM_EXTINT;
  }

  private eoi(): void {
    const isrv = highest(this.isr);
    if (isrv < 0) return;
    clearBit(this.isr, isrv);
    if (testBit(this.tmr, isrv)) this.onEoi?.(isrv);
  }

  private accept(deliveryMode: number, vector: number, level: boolean): void {
    switch (deliveryMode) {
      case DM_FIXED:
      case DM_LOWEST:
        this.acceptFixed(vector, level);
        return;
      case DM_NMI:
        this.nmiPending = Math.min(this.nmiPending + 1, 2);
        this.stats.nmis++;
        return;
      case DM_EXTINT:
        this.extIntMessage = true;
        return;
      default:
        // SMI, INIT, start-up: nothing to do for the one CPU of this machine.
        this.stats.ipisIgnored++;
        return;
    }
  }

  private acceptFixed(vector: number, level: boolean): void {
    if (!(this.svr & SVR_ENABLE)) return; // a software-disabled APIC refuses fixed interrupts
    if (vector < 16) {
      this.error(ESR_RECEIVE_ILLEGAL_VECTOR);
      return;
    }
    setBit(this.irr, vector);
    if (level) setBit(this.tmr, vector);
    else clearBit(this.tmr, vector);
  }

  private error(bits: number): void {
    this.esrPending |= bits;
    const lvt = this.lvt[LVT_ERROR]!;
    if (!(lvt & LVT_MASKED) && (lvt & 0xff) >= 16) {
      setBit(this.irr, lvt & 0xff);
      clearBit(this.tmr, lvt & 0xff);
    }
  }

  private sendIpi(): void {
    const low = this.icrLow;
    const vector = low & 0xff;
    const mode = (low >> 8) & 7;
    const shorthand = (low >> 18) & 3;
    if ((mode === DM_FIXED || mode === DM_LOWEST) && vector < 16) {
      this.error(ESR_SEND_ILLEGAL_VECTOR);
      return;
    }
    let toSelf: boolean;
    switch (shorthand) {
      case 1:
      case 2:
        toSelf = true;
        break;
      case 3:
        toSelf = false;
        break;
      default:
        toSelf = this.matches(this.icrHigh >>> 24, (low & ICR_LOGICAL) !== 0);
        break;
    }
    if (mode === DM_INIT || mode === DM_STARTUP) {
      this.stats.ipisIgnored++; // one CPU: no application processor to start
      return;
    }
    if (toSelf) this.accept(mode, vector, false);
  }
}

/** The highest set bit of a 256-bit register bank, or -1. */
function highest(bank: Uint32Array): number {
  for (let i = 7; i >= 0; i--) {
    const word = bank[i]!;
    if (word !== 0) return i * 32 + 31 - Math.clz32(word);
  }
  return -1;
}

function setBit(bank: Uint32Array, bit: number): void {
  bank[bit >> 5] = bank[bit >> 5]! | (1 << (bit & 31));
}

function clearBit(bank: Uint32Array, bit: number): void {
  bank[bit >> 5] = bank[bit >> 5]! & ~(1 << (bit & 31));
}

function testBit(bank: Uint32Array, bit: number): boolean {
  return (bank[bit >> 5]! & (1 << (bit & 31))) !== 0;
}

const APIC_VERSION = 0x00050014;
const APIC_BASE_BSP = 0x100;
const APIC_BASE_ENABLE = 0x800;
const SVR_ENABLE = 0x100;
const ICR_DELIVERY_STATUS = 0x1000;
const ICR_LOGICAL = 0x800;
const ESR_SEND_ILLEGAL_VECTOR = 0x20;
const ESR_RECEIVE_ILLEGAL_VECTOR = 0x40;

const LVT_TIMER = 0;
const LVT_LINT0 = 3;
const LVT_LINT1 = 4;
const LVT_ERROR = 5;
const LVT_MASKED = 0x10000;
const LVT_REMOTE_IRR = 0x4000;
/** Writable bits per LVT entry (vector, delivery mode, polarity, trigger, mask, timer mode). */
const LVT_WRITABLE = [0x700ff, 0x107ff, 0x107ff, 0x1a7ff, 0x1a7ff, 0x100ff] as const;

const TIMER_ONESHOT = 0;
const TIMER_PERIODIC = 1;
const TIMER_TSC_DEADLINE = 2;

const DM_FIXED = 0;
const DM_LOWEST = 1;
const DM_NMI = 4;
const DM_INIT = 5;
const DM_STARTUP = 6;
const DM_EXTINT = 7;
