import type { AccessSize, Device, IrqLine } from "../bus/device.js";
import { NO_IRQ } from "../bus/device.js";
import { readBytes, writeBytes } from "./guest_fault_log.js";
import type { VirtualClock } from "./interrupt_source.js";

/** The PIT's input clock: 1.193182 MHz (Linux PIT_TICK_RATE). */
export const PIT_HZ = 1193182;
const TICKS_PER_NS = PIT_HZ / 1e9;
const NS_PER_TICK = 1e9 / PIT_HZ;

/**
 * One counter of the 8254. Its state is a function of the clock: the count and the time it was
 * loaded, from which the current count and OUT are computed on demand (no per-tick work).
 */
class PitChannel {
  /** Programmed mode 0-5 (6 and 7 alias 2 and 3). */
  mode = 0;
  /** Access mode: 1 LSB only, 2 MSB only, 3 LSB then MSB. */
  rw = 3;
  bcd = false;
  /** The initial count, 1-65536 (0 is written as 0 and means 65536, or 10000 in BCD). */
  count = 0x10000;
  /** Clock time the count was loaded (or the gate triggered it). */
  loadNs = 0;
  /** True once a count has been written since the last control word. */
  loaded = false;
  /** Modes 1 and 5: whether the gate has triggered the count. */
  triggered = false;
  gate: boolean;
  /** Modes 0 and 4: while the gate is low, counting is suspended from this time. */
  gateLowNs: number | undefined;

  private writeLsbNext = true;
  private writeLatch = 0;
  private readLsbNext = true;
  /** Latched count (counter latch command or read-back), served before the live counter. */
  private latchedCount: number | undefined;
  private latchedCountMsbNext = false;
  private latchedStatus: number | undefined;
  /** Rising edges of OUT already passed on to the IRQ line under the current programming. */
  edgesSeen = 0;

  constructor(
    readonly index: number,
    gate: boolean,
  ) {
    this.gate = gate;
  }

  /** Clock ticks counted since the load (modes 0/4 stop counting while the gate is low). */
  ticks(nowNs: number): number {
    const end = this.gateLowNs ?? nowNs;
    const elapsed = Math.min(end, nowNs) - this.loadNs;
    return elapsed <= 0 ? 0 : Math.floor(elapsed * TICKS_PER_NS);
  }

  private effectiveMode(): number {
    return this.mode > 5 ? this.mode - 4 : this.mode;
  }

  /** The counting element's current value (binary, 0-0xffff). */
  counter(nowNs: number): number {
    if (!this.loaded) return this.count & 0xffff;
    const n = this.count;
    const mode = this.effectiveMode();
    if ((mode === 1 || mode === 5) && !this.triggered) return n & 0xffff;
    if ((mode === 2 || mode === 3) && !this.gate) return n & 0xffff;
    const d = this.ticks(nowNs);
    switch (mode) {
      case 2:
        return n - (d % n);
      case 3: {
        // Decrements by two each clock through both half periods (odd counts: the first half
        // is one clock longer).
        const half = Math.ceil(n / 2);
        const phase = d % n;
        const inHalf = phase < half ? phase : phase - half;
        return (n - 2 * inHalf) & 0xffff & ~1;
      }
      default:
        // Modes 0, 1, 4, 5 count down and wrap through 0 (to 0xffff, or 9999 in BCD).
        return (((n - d) % this.modulus()) + this.modulus()) % this.modulus();
    }
  }

  private modulus(): number {
    return this.bcd ? 10000 : 0x10000;
  }

  /** The OUT pin. */
  out(nowNs: number): boolean {
    const mode = this.effectiveMode();
    if (!this.loaded) return mode !== 0; // mode 0: low after the control word; others: high
    const n = this.count;
    switch (mode) {
      case 0:
        return this.ticks(nowNs) >= n;
      case 1:
        return !this.triggered || this.ticks(nowNs) >= n;
      case 2:
        if (!this.gate) return true;
        return this.ticks(nowNs) % n !== n - 1 || n === 1;
      case 3: {
        if (!this.gate) return true;
        return this.ticks(nowNs) % n < Math.ceil(n / 2);
      }
      case 4:
        return this.ticks(nowNs) !== n;
      default:
        return !this.triggered || this.ticks(nowNs) !== n;
    }
  }

  /** Rising edges of OUT from the load up to `nowNs` (what an edge-triggered IRQ input sees). */
  risingEdges(nowNs: number): number {
    if (!this.loaded) return 0;
    const mode = this.effectiveMode();
    const n = this.count;
    const d = this.ticks(nowNs);
    switch (mode) {
      case 0:
        return d >= n ? 1 : 0;
      case 1:
        return this.triggered && d >= n ? 1 : 0;
      case 2:
      case 3:
        return this.gate ? Math.floor(d / n) : 0;
      case 4:
        return d >= n + 1 ? 1 : 0;
      default:
        return this.triggered && d >= n + 1 ? 1 : 0;
    }
  }

  /** Clock time of rising edge number `edgesSeen + 1` since the load, or Infinity. */
  nextRisingEdgeNs(): number {
    if (!this.loaded || this.gateLowNs !== undefined) return Number.POSITIVE_INFINITY;
    const mode = this.effectiveMode();
    const n = this.count;
    const next = this.edgesSeen + 1;
    let tick: number;
    switch (mode) {
      case 2:
      case 3:
        if (!this.gate) return Number.POSITIVE_INFINITY;
        tick = next * n;
        break;
      case 0:
      case 1:
      case 4:
      case 5:
        if (next > 1) return Number.POSITIVE_INFINITY; // one-shot modes: one edge per load
        if ((mode === 1 || mode === 5) && !this.triggered) return Number.POSITIVE_INFINITY;
        tick = mode === 0 || mode === 1 ? n : n + 1;
        break;
      default:
        return Number.POSITIVE_INFINITY;
    }
    // +1 ns so that ticks() of the returned time is surely >= tick despite float rounding.
    return this.loadNs + Math.ceil(tick * NS_PER_TICK) + 1;
  }

  // ---- programming ----

  control(value: number, nowNs: number): void {
    const rw = (value >> 4) & 3;
    if (rw === 0) {
      this.latch(nowNs);
      return;
    }
    this.rw = rw;
    this.mode = (value >> 1) & 7;
    this.bcd = (value & 1) !== 0;
    this.loaded = false;
    this.triggered = false;
    this.gateLowNs = undefined;
    this.writeLsbNext = true;
    this.readLsbNext = true;
    this.latchedCount = undefined;
    this.latchedStatus = undefined;
  }

  latch(nowNs: number): void {
    if (this.latchedCount !== undefined) return; // a second latch before the read is ignored
    this.latchedCount = this.toGuest(this.counter(nowNs));
    this.latchedCountMsbNext = this.rw === 2;
  }

  latchStatus(nowNs: number): void {
    if (this.latchedStatus !== undefined) return;
    this.latchedStatus =
      (this.out(nowNs) ? 0x80 : 0) |
      (this.loaded ? 0 : 0x40) |
      (this.rw << 4) |
      (this.mode << 1) |
      (this.bcd ? 1 : 0);
  }

  /** Returns true when a new count was loaded (the caller resynchronizes the IRQ line). */
  writeCount(byte: number, nowNs: number): boolean {
    let value: number;
    if (this.rw === 1) value = byte;
    else if (this.rw === 2) value = byte << 8;
    else if (this.writeLsbNext) {
      this.writeLatch = byte;
      this.writeLsbNext = false;
      return false;
    } else {
      value = this.writeLatch | (byte << 8);
      this.writeLsbNext = true;
    }
    let n = this.bcd ? fromBcd(value) : value;
    if (n === 0) n = this.modulus();
    const mode = this.effectiveMode();
    // Modes 2 and 3 take a new count at the end of the current period; loading at once is
    // what Linux needs (it reprograms only after a control word, which restarts anyway).
    this.count = n;
    this.loaded = true;
    this.loadNs = nowNs;
    this.edgesSeen = 0;
    this.triggered = false;
    this.gateLowNs = (mode === 0 || mode === 4) && !this.gate ? nowNs : undefined;
    return true;
  }

  read(nowNs: number): number {
    if (this.latchedStatus !== undefined) {
      const s = this.latchedStatus;
      this.latchedStatus = undefined;
      return s;
    }
    if (this.latchedCount !== undefined) {
      const c = this.latchedCount;
      if (this.rw === 3 && !this.latchedCountMsbNext) {
        this.latchedCountMsbNext = true;
        return c & 0xff;
      }
      this.latchedCount = undefined;
      return this.rw === 1 ? c & 0xff : (c >> 8) & 0xff;
    }
    const c = this.toGuest(this.counter(nowNs));
    if (this.rw === 1) return c & 0xff;
    if (this.rw === 2) return (c >> 8) & 0xff;
    const lsb = this.readLsbNext;
    this.readLsbNext = !lsb;
    return lsb ? c & 0xff : (c >> 8) & 0xff;
  }

  setGate(high: boolean, nowNs: number): void {
    if (high === this.gate) return;
    this.gate = high;
    const mode = this.effectiveMode();
    if (mode === 0 || mode === 4) {
      // Gate low suspends counting; high resumes where it stopped.
      if (!high) this.gateLowNs = nowNs;
      else if (this.gateLowNs !== undefined) {
        this.loadNs += nowNs - this.gateLowNs;
        this.gateLowNs = undefined;
      }
    } else if (high && this.loaded) {
      // Modes 1, 2, 3, 5: a rising gate (re)starts the count.
      this.loadNs = nowNs;
      this.edgesSeen = 0;
      this.triggered = true;
    }
  }

  private toGuest(value: number): number {
    return this.bcd ? toBcd(value % 10000) : value & 0xffff;
  }
}

function fromBcd(v: number): number {
  return ((v >> 12) & 0xf) * 1000 + ((v >> 8) & 0xf) * 100 + ((v >> 4) & 0xf) * 10 + (v & 0xf);
}

function toBcd(n: number): number {
  return (
    (Math.floor(n / 1000) % 10) * 0x1000 +
    (Math.floor(n / 100) % 10) * 0x100 +
    (Math.floor(n / 10) % 10) * 0x10 +
    (n % 10)
  );
}

/**
 * An Intel 8254 programmable interval timer at PIT_PORT (0x40-0x43), counting at PIT_HZ on the
 * machine's VirtualClock, plus system control port B (SYSTEM_CONTROL_PORT_B, 0x61) which gates
 * counter 2 and shows its OUT. Counter 0 drives IRQ0 (an edge per OUT rising edge), counter 1
 * (DRAM refresh) runs unobserved, counter 2 is the speaker / calibration counter.
 *
 * Control word (0x43): b7:6 counter (11 = read-back), b5:4 access (00 latch, 01 LSB, 10 MSB,
 * 11 LSB then MSB), b3:1 mode, b0 BCD. Read-back: b5 = 0 latch counts, b4 = 0 latch status,
 * b3:1 select counters 2..0. Status byte: b7 OUT, b6 null count, b5:4 access, b3:1 mode, b0 BCD.
 *
 * Modes (82C54 data sheet): 0 interrupt on terminal count, 1 hardware one-shot, 2 rate
 * generator, 3 square wave, 4 software strobe, 5 hardware strobe. Gate 0 and 1 are tied high.
 *
 * Port 0x61 (read): b0 gate 2, b1 speaker data enable, b4 refresh toggle (flips every 15.085 us),
 * b5 OUT2; (write) b0 gate 2, b1 speaker data, b2-b3 parity/IOCHK check enables (kept).
 * Linux's TSC calibration (arch/x86/kernel/tsc.c quick_pit_calibrate and pit_calibrate_tsc) sets
 * gate 2 high through 0x61, programs counter 2 in mode 0 (0xb0), and then either polls OUT2 in
 * b5 of 0x61 or reads the live MSB of counter 2; both come out of the same clock as the TSC.
 *
 * Interrupts are produced lazily: `advance(nowNs)` raises the IRQ0 edges due by then (several
 * missed periods coalesce into one edge, as a PIC's IRR would), `nextDeadlineNs()` says when.
 */
export class Pit8254 implements Device {
  readonly name = "pit8254";
  /** Port 0x61. */
  readonly portB: Device;
  readonly stats = { irqEdges: 0, coalescedEdges: 0 };

  private readonly channels: [PitChannel, PitChannel, PitChannel] = [
    new PitChannel(0, true),
    new PitChannel(1, true),
    new PitChannel(2, false),
  ];
  private portBLatch = 0;
  private irqLevel = false;

  constructor(
    private readonly clock: VirtualClock,
    private readonly irq0: IrqLine = NO_IRQ,
  ) {
    this.portB = {
      name: "port61",
      read: (_offset: number, size: AccessSize) => {
        const b = this.readPortB();
        return size === 1 ? b : size === 2 ? 0xff00 | b : (0xffffff00 | b) >>> 0;
      },
      write: (_offset: number, _size: AccessSize, value: number) => this.writePortB(value & 0xff),
    };
  }

  /** When IRQ0 next needs an edge (clock ns), or Infinity. */
  nextDeadlineNs(): number {
    return this.channels[0].nextRisingEdgeNs();
  }

  /** Raises the IRQ0 edges due up to `nowNs` (one edge however many periods passed). */
  advance(nowNs: number = this.clock.nowNs()): void {
    const c = this.channels[0];
    const edges = c.risingEdges(nowNs);
    if (edges > c.edgesSeen) {
      this.stats.irqEdges++;
      this.stats.coalescedEdges += edges - c.edgesSeen - 1;
      c.edgesSeen = edges;
      if (this.irqLevel) this.irq0.setLevel(false);
      this.irq0.setLevel(true);
      this.irqLevel = true;
    }
    this.syncIrqLevel(nowNs);
  }

  /** OUT of a counter (0-2), for tests and for a platform that wires OUT somewhere else. */
  out(channel: 0 | 1 | 2, nowNs: number = this.clock.nowNs()): boolean {
    return this.channels[channel].out(nowNs);
  }

  // ---- Device (0x40-0x43) ----

  read(offset: number, size: AccessSize): number {
    return readBytes((o) => this.readByte(o), offset, size, 4);
  }

  write(offset: number, size: AccessSize, value: number): void {
    writeBytes((o, v) => this.writeByte(o, v), offset, size, value, 4);
  }

  private readByte(offset: number): number {
    if (offset > 2) return 0xff; // the control word register is write-only
    return this.channels[offset]!.read(this.clock.nowNs());
  }

  private writeByte(offset: number, value: number): void {
    const now = this.clock.nowNs();
    if (offset <= 2) {
      const c = this.channels[offset]!;
      if (c.writeCount(value, now) && offset === 0) {
        this.advance(now);
      }
      return;
    }
    if (offset !== 3) return;
    const select = value >> 6;
    if (select === 3) {
      // Read-back command.
      for (let i = 0; i < 3; i++) {
        if (!(value & (2 << i))) continue;
        const c = this.channels[i]!;
        if (!(value & 0x20)) c.latch(now);
        if (!(value & 0x10)) c.latchStatus(now);
      }
      return;
    }
    const c = this.channels[select]!;
    c.control(value, now);
    if (select === 0) this.syncIrqLevel(now);
  }

  /** Follows OUT0 with the IRQ0 line outside of edges (mode 0 drops OUT on programming). */
  private syncIrqLevel(nowNs: number): void {
    const out = this.channels[0].out(nowNs);
    if (!out && this.irqLevel) {
      this.irqLevel = false;
      this.irq0.setLevel(false);
    }
  }

  private readPortB(): number {
    const now = this.clock.nowNs();
    const refresh = Math.floor(now / REFRESH_TOGGLE_NS) & 1;
    const c2 = this.channels[2];
    return (this.portBLatch & 0x0f) | (refresh ? 0x10 : 0) | (c2.out(now) ? 0x20 : 0);
  }

  private writePortB(value: number): void {
    this.portBLatch = value & 0x0f;
    this.channels[2].setGate((value & 1) !== 0, this.clock.nowNs());
  }
}

/** Port 0x61 b4 toggles with each DRAM refresh request (15.085 us on the PC/AT). */
const REFRESH_TOGGLE_NS = 15085;
