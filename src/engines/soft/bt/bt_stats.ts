/**
 * Counters of the binary translator, as `SoftCpu.stats.bt` and `vessel vm run --stats` show them:
 * the lecture's "instructions are translated" made visible (blocks, bytes of guest code, what was
 * dropped and why, and the sensitive instructions that became direct VMM calls).
 */
export interface BtStats {
  /** Blocks compiled (a block dropped and compiled again counts twice). */
  blocksTranslated: number;
  /** Bytes of guest code in the compiled blocks. */
  guestBytesTranslated: number;
  /** Blocks dropped because their code page was written (self-modifying code, page reuse). */
  blocksInvalidated: number;
  /** Blocks dropped because the code cache was over its limit. */
  blocksEvicted: number;
  /** Compiled blocks run. */
  blockExecutions: number;
  /** Guest instructions run in compiled blocks (the rest ran in the interpreter). */
  translatedInstructions: number;
  /** Host nanoseconds spent decoding and compiling blocks. */
  translateNs: number;
  /** Blocks in the code cache now. */
  cacheBlocks: number;
  /** Sensitive and privileged instructions reached through direct VMM calls, by kind. */
  vmmCalls: Record<string, number>;
}

export function emptyBtStats(): BtStats {
  return {
    blocksTranslated: 0,
    guestBytesTranslated: 0,
    blocksInvalidated: 0,
    blocksEvicted: 0,
    blockExecutions: 0,
    translatedInstructions: 0,
    translateNs: 0,
    cacheBlocks: 0,
    vmmCalls: {},
  };
}
