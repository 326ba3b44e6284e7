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
