/**
 * Backward liveness of the arithmetic flags over one block: a flag-setting instruction needs to
 * leave its lazy-flag state only when something can observe it before the next instruction that
 * sets all six flags: an instruction that reads flags, one that can fault (the exception handler
 * sees EFLAGS), or a block exit (every flag is live there: the successor is not known).
 */
export interface FlagUse {
  /** Reads any arithmetic flag (Jcc, ADC, INC's CF, every interpreter handler call). */
  reads: boolean;
  /** Sets all six arithmetic flags without reading them. */
  writesAll: boolean;
  /** May raise an exception (memory access, handler call). */
  mayFault: boolean;
}

/** For each instruction: whether the flags it leaves are live after it. */
export function flagsLiveAfter(uses: readonly FlagUse[]): boolean[] {
  const live = new Array<boolean>(uses.length);
  let needed = true; // at the block exit
  for (let k = uses.length - 1; k >= 0; k--) {
    live[k] = needed;
    const u = uses[k]!;
    needed = u.reads || u.mayFault || (!u.writesAll && needed);
  }
  return live;
}
