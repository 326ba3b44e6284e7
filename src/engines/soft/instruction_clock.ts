/**
 * A virtual clock driven by the software CPU's retired-instruction count (QEMU's -icount idea):
 * time advances `nsPerInstruction` per instruction while the CPU runs and jumps to the next timer
 * deadline while it halts. Every timer of the machine (PIT, RTC, APIC timer) and the TSC read it,
 * so they agree exactly and do not jitter with host load: Linux's TSC calibration against the PIT
 * (arch/x86/kernel/tsc.c pit_calibrate_tsc, which rejects a run whose slowest loop iteration is 10x
 * its fastest) succeeds on a busy host, and idle waits cost no host time.
 *
 * The price: a CPU-bound guest sees time pass at the rate the interpreter retires instructions
 * relative to `nsPerInstruction`, not at wall-clock rate. `idle` lets a run loop keep it from
 * running ahead of the host's clock (interactive use: `sleep 1` then takes at least a second).
 *
 * Run-loop recipe (soft engine, PcPlatform):
 *   const clock = new InstructionClock();   // devices and the platform are built on it
 *   const cpu = new SoftCpu({ ..., clock }); clock.attach(cpu.cpu);
 *   on stop.kind === "halted":
 *     const waitMs = clock.idle(platform.nextDeadlineNs(), host.nowNs());
 *     if (waitMs > 0) sleep or wait for console input (at most waitMs);
 *     platform.advance(clock.nowNs());
 */
import type { VirtualClock } from "../../devices/interrupt_source.js";

export interface InstructionCounter {
  readonly instructions: number;
}

export class InstructionClock implements VirtualClock {
  private counter: InstructionCounter | undefined;
  private baseNs = 0;
  private baseInstructions = 0;

  /** @param nsPerInstruction virtual nanoseconds per retired instruction (10 = a 100 MIPS CPU). */
  constructor(readonly nsPerInstruction = 10) {}

  /** Connects the clock to the CPU whose instructions it counts (devices may be built before). */
  attach(counter: InstructionCounter): void {
    const now = this.nowNs();
    this.counter = counter;
    this.baseNs = now;
    this.baseInstructions = counter.instructions;
  }

  nowNs(): number {
    if (this.counter === undefined) return this.baseNs;
    return this.baseNs + (this.counter.instructions - this.baseInstructions) * this.nsPerInstruction;
  }

  /**
   * A halted CPU waits for `deadlineNs`: time jumps there at once while virtual time is behind the
   * host's clock (`hostNowNs`, e.g. a HostClock), else it jumps to the host's time and the caller
   * should wait the returned number of host milliseconds (then call again).
   */
  idle(deadlineNs: number, hostNowNs: number): number {
    if (!Number.isFinite(deadlineNs)) {
      this.skipTo(hostNowNs);
      return 10;
    }
    if (deadlineNs <= hostNowNs) {
      this.skipTo(deadlineNs);
      return 0;
    }
    this.skipTo(hostNowNs);
    return (deadlineNs - this.nowNs()) / 1e6;
  }

  /** Moves time forward to `ns` (a halted CPU skipping to the next timer deadline); never back. */
  skipTo(ns: number): void {
    if (!Number.isFinite(ns) || ns <= this.nowNs()) return;
    this.baseNs = ns;
    this.baseInstructions = this.counter?.instructions ?? 0;
  }
}
