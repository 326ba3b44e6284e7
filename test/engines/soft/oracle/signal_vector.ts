/**
 * The exception vector behind a signal, for the process runners (host_runner.ts, qemu_runner.ts,
 * host64_runner.ts).
 *
 * Linux writes the vector into the signal's sigcontext (`trapno`, from thread.trap_nr), so the
 * native runners normally read it there. QEMU's user-mode emulator does not: it writes its
 * `exception_index`, which is already -1 again when the signal frame is built (seen with
 * qemu-i386 7.2). Then the vector is read back from the signal and its `si_code`, as Linux's
 * traps.c raises them (and QEMU's linux-user/i386/cpu_loop.c copies):
 *
 * | signal  | si_code                          | vector                         |
 * | ------- | -------------------------------- | ------------------------------ |
 * | SIGFPE  | FPE_INTDIV, FPE_INTOVF           | #DE (0)                        |
 * | SIGFPE  | FPE_FLT*                         | #MF (16) (no case uses SSE #XM) |
 * | SIGILL  | any                              | #UD (6)                        |
 * | SIGTRAP | TRAP_TRACE                       | #DB (1)                        |
 * | SIGTRAP | TRAP_BRKPT, SI_KERNEL            | #BP (3)                        |
 * | SIGBUS  | BUS_ADRALN                       | #AC (17)                       |
 * | SIGBUS  | SI_KERNEL                        | #NP (11) or #SS (12): ambiguous |
 * | SIGSEGV | SEGV_MAPERR, SEGV_ACCERR         | #PF (14), CR2 = si_addr        |
 * | SIGSEGV | SEGV_BNDERR                      | #BR (5)                        |
 * | SIGSEGV | SI_KERNEL                        | #GP (13), or #OF/#BR: ambiguous |
 *
 * The ambiguous rows are why such a runner probes INTO and BOUND (`cannot`), and sits out the
 * cases that end in #OF or #BR when it cannot tell them from #GP.
 */

const SIGILL = 4;
const SIGTRAP = 5;
const SIGBUS = 7;
const SIGFPE = 8;
const SIGSEGV = 11;

const FPE_INTDIV = 1;
const FPE_INTOVF = 2;
const TRAP_TRACE = 2;
const BUS_ADRALN = 1;
const SEGV_MAPERR = 1;
const SEGV_ACCERR = 2;
const SEGV_BNDERR = 3;
const SEGV_PKUERR = 4;

/** The vector a signal stands for (the commonest one where the signal is ambiguous). */
export function vectorFromSignal(signo: number, code: number): number {
  switch (signo) {
    case SIGFPE:
      return code === FPE_INTDIV || code === FPE_INTOVF ? 0 : 16;
    case SIGILL:
      return 6;
    case SIGTRAP:
      return code === TRAP_TRACE ? 1 : 3;
    case SIGBUS:
      return code === BUS_ADRALN ? 17 : 11;
    case SIGSEGV:
      if (code === SEGV_MAPERR || code === SEGV_ACCERR || code === SEGV_PKUERR) return 14;
      return code === SEGV_BNDERR ? 5 : 13;
    default:
      throw new Error(`the snippet ended with signal ${signo} (si_code ${code}), which no exception raises`);
  }
}

/**
 * The vector of a process runner's report: sigcontext's trapno when the kernel filled it in
 * (0..31), else the one read back from the signal.
 */
export function reportedVector(trapno: number, signo: number, code: number): number {
  return trapno >>> 0 < 32 ? trapno : vectorFromSignal(signo, code);
}
