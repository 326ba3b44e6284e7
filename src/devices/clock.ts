import { performance } from "node:perf_hooks";
import type { VirtualClock } from "./interrupt_source.js";

/**
 * The machine's time base from the host's monotonic clock (performance.now(), sub-microsecond
 * in Node), zero at construction. `pause()`/`resume()` stop virtual time while a VM is paused, so
 * a guest's timers do not see the pause as a jump. Every timer of a machine (PIT, APIC timer, TSC,
 * RTC) reads this one clock, so they agree.
 */
export class HostClock implements VirtualClock {
  private readonly startMs = performance.now();
  private pausedAtMs: number | undefined;
  private pausedTotalMs = 0;

  nowNs(): number {
    const now = this.pausedAtMs ?? performance.now();
    return (now - this.startMs - this.pausedTotalMs) * 1e6;
  }

  pause(): void {
    if (this.pausedAtMs === undefined) this.pausedAtMs = performance.now();
  }

  resume(): void {
    if (this.pausedAtMs === undefined) return;
    this.pausedTotalMs += performance.now() - this.pausedAtMs;
    this.pausedAtMs = undefined;
  }
}

/**
 * A clock that moves only when told: unit tests, and deterministic runs of the soft engine (a
 * CPU loop may derive time from instructions retired and `set()` it).
 */
export class ManualClock implements VirtualClock {
  constructor(private ns = 0) {}

  nowNs(): number {
    return this.ns;
  }

  /** Moves time forward by `ns` (never backwards: negative values are ignored). */
  advance(ns: number): void {
    if (ns > 0) this.ns += ns;
  }

  /** Sets the time; a value in the past is ignored (virtual time is monotonic). */
  set(ns: number): void {
    if (ns > this.ns) this.ns = ns;
  }
}

/**
 * Virtual time from instructions retired (the idea of QEMU's -icount): nowNs = base +
 * (instructions - baseCount) * nsPerInstruction. Every guest loop iteration then costs the same
 * virtual time, which a software CPU on host time cannot promise (JIT, GC and device polls make
 * iterations vary by far more than 10x). Linux needs that steadiness where it calibrates the TSC
 * against the PIT (arch/x86/kernel/tsc.c pit_calibrate_tsc rejects a run whose slowest loop is
 * more than 10 times its fastest, and wants 1000 loops in 10 ms).
 *
 * While the CPU is halted nothing retires, so the CPU loop moves time on with `idleUntil(ns)`
 * (to the platform's next deadline, after sleeping in real time if it wants to pace the guest).
 * `setRate()` changes the speed without a jump, so a loop may keep virtual time near host time.
 */
export class InstructionClock implements VirtualClock {
  private baseNs = 0;
  private baseCount: number;

  constructor(
    private readonly retired: () => number,
    private nsPerInstruction = 1,
  ) {
    this.baseCount = retired();
  }

  nowNs(): number {
    return this.baseNs + (this.retired() - this.baseCount) * this.nsPerInstruction;
  }

  /** Jumps time forward to `ns` (HLT: nothing retires until the next deadline). */
  idleUntil(ns: number): void {
    const now = this.nowNs();
    if (!(ns > now)) return;
    this.baseNs = ns;
    this.baseCount = this.retired();
  }

  /** Sets the virtual duration of one instruction from now on (time stays continuous). */
  setRate(nsPerInstruction: number): void {
    if (!(nsPerInstruction > 0) || !Number.isFinite(nsPerInstruction)) return;
    this.baseNs = this.nowNs();
    this.baseCount = this.retired();
    this.nsPerInstruction = nsPerInstruction;
  }

  get rate(): number {
    return this.nsPerInstruction;
  }
}
