/**
 * What a software CPU asks of its interrupt controllers between instructions (the INTR pin and the
 * INTA cycle). The PIC pair and the local APIC implement it; the soft engine consumes it.
 */
export interface InterruptSource {
  /** True when a maskable interrupt is pending for the CPU (regardless of EFLAGS.IF). */
  hasInterrupt(): boolean;
  /** The CPU accepts the pending interrupt: returns its vector and moves it from IRR to ISR. */
  acknowledgeInterrupt(): number;
}

/**
 * One time base for every timer of a machine (PIT, APIC timer, TSC, RTC agree on it). Nanoseconds
 * since machine start, as a float (53 bits of ns is 104 days).
 */
export interface VirtualClock {
  nowNs(): number;
}

/**
 * The NMI pin as a software CPU sees it (the local APIC's LINT1 or an NMI message). The CPU checks
 * it between instructions regardless of EFLAGS.IF, and blocks further NMIs until IRET.
 */
export interface NmiSource {
  /** True when an NMI is waiting. */
  hasNmi(): boolean;
  /** The CPU takes the NMI (vector 2). */
  acknowledgeNmi(): void;
}
