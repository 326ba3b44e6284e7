/**
 * The binary translator (technique `bt`): compiles hot guest code into JavaScript functions and
 * runs them from the interpreter's loop (soft_cpu.ts `execute`).
 *
 * Translation is tiered, because compiling is dear. The interpreter runs everything first; at
 * each block entry (the instruction after a control transfer or serialising instruction, or after
 * a compiled block) it looks at the decoded record there: a record with a block compiled for the
 * current mode runs the block; otherwise its entry count goes up, and at HOT_THRESHOLD the block
 * is cut (block_builder.ts) and compiled (emitter.ts). Emitting a block and V8 compiling it costs
 * some hundred microseconds, which the interpreter spends on a few thousand instructions; most of
 * a kernel's boot code runs a handful of times, and compiling all of it made the boot four times
 * slower than interpreting it.
 *
 * Blocks hang off the interpreter's records (block_cache.ts), so finding the successor of a block
 * is the interpreter's own lookup: an index into the fetch page's records, through the soft TLB
 * only when the page changes (a fetch faults exactly as in the interpreter). The run loop's slice
 * bounds interrupt latency: a block runs only if it fits in what is left of the slice, and counts
 * its instructions exactly, so the virtual clock sees the same time as under the interpreter.
 */
import type { Cpu } from "../cpu.js";
import type { Insn } from "../insn.js";
import { Cr0, Seg } from "../registers.js";
import { type BlockCode, buildBlock } from "./block_builder.js";
import { BlockCache, modeKey } from "./block_cache.js";
import type { BtStats } from "./bt_stats.js";
import { emitBlock, type VmmCounters } from "./emitter.js";

/**
 * Entries of a cold block before it is compiled (see the file comment). Measured on the default
 * guest's first 400 M instructions (bench/soft-profile/boot_profile.js): 64 entries, 13.6 k blocks
 * compiled, 17.6 s (interpreter 7.5 s); 1000: 9.9 s; 5000: 7.8 s; 20000: 371 blocks, 6.4 s. Every
 * compiled block costs V8 machine code of its own: thousands of them thrash the host's caches.
 */
export const HOT_THRESHOLD = 20000;

class Counters implements VmmCounters {
  counts = new Float64Array(64);
  readonly kinds: string[] = [];
  private readonly byKind = new Map<string, number>();
  index(kind: string): number {
    let k = this.byKind.get(kind);
    if (k === undefined) {
      k = this.kinds.length;
      this.kinds.push(kind);
      this.byKind.set(kind, k);
    }
    return k;
  }
}

export class Translator {
  readonly cache: BlockCache;
  private readonly vmm = new Counters();
  private blocksTranslated = 0;
  private guestBytes = 0;
  private translateNs = 0;
  executions = 0;
  translatedInsns = 0;

  constructor(
    private readonly c: Cpu,
    cacheLimit?: number,
    readonly threshold = HOT_THRESHOLD,
  ) {
    this.cache = new BlockCache(cacheLimit);
    c.onCodeWrite = (page) => this.cache.dropPage(page);
  }

  /** The mode key of the CPU now (what a block's code was compiled for). */
  mode(): number {
    const c = this.c;
    return modeKey(c.cs32, c.ss32, c.cpl, (c.cr0 & Cr0.PG) !== 0);
  }

  /**
   * Compiles the block whose first instruction is `insn`, the record at EIP in the fetch page
   * (about to run: the CPU is in the block's mode). A first instruction that crosses the page end
   * or cannot be fetched leaves it to the interpreter for good (btHits = -1).
   */
  compile(insn: Insn): void {
    const c = this.c;
    const t0 = performance.now();
    const eip = c.eip;
    const linear = (c.segBase[Seg.CS]! + eip) | 0;
    let code: BlockCode | undefined;
    try {
      code = buildBlock(c, eip, linear);
    } catch {
      code = undefined;
    }
    if (code === undefined || code.insns.length === 0) {
      insn.btHits = -1;
      return;
    }
    const name = (linear >>> 0).toString(16).padStart(8, "0");
    insn.btFn = emitBlock(c, code, name, c.rcheck, c.wcheck, c.ss32, this.vmm).fn;
    insn.btMode = this.mode();
    insn.btCount = code.insns.length;
    this.cache.add(c.fetchPhysPage, insn);
    this.blocksTranslated++;
    this.guestBytes += code.bytes;
    this.translateNs += (performance.now() - t0) * 1e6;
  }

  /** Copies the counters into `stats` (SoftCpu.stats.bt). */
  syncStats(stats: BtStats): void {
    stats.blocksTranslated = this.blocksTranslated;
    stats.guestBytesTranslated = this.guestBytes;
    stats.blocksInvalidated = this.cache.invalidated;
    stats.blocksEvicted = this.cache.evicted;
    stats.blockExecutions = this.executions;
    stats.translatedInstructions = this.translatedInsns;
    stats.translateNs = Math.round(this.translateNs);
    stats.cacheBlocks = this.cache.size;
    for (let k = 0; k < this.vmm.kinds.length; k++) stats.vmmCalls[this.vmm.kinds[k]!] = this.vmm.counts[k]!;
  }
}
