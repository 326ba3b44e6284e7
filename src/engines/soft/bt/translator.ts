/**
 * The binary translator's run loop (technique `bt`): runs the current slice of the SoftCpu's run
 * loop block by block. A block is looked up by linear EIP through the soft TLB (the same fetch
 * path the interpreter uses, so a fetch faults exactly as there), found by physical page, offset
 * and mode in the code cache, or cut and compiled (block_builder.ts, emitter.ts). Blocks chain to
 * the successors they last exited to, so loops and straight-line code skip the lookup; a chain is
 * followed only within one "fetch epoch" (no TLB flush, mode change or code write since it was
 * made) and only to a block still valid.
 *
 * The slice bounds interrupt latency: every block decrements `c.slice` by its instructions and
 * the loop returns to SoftCpu.run (interrupts, device polls) when it runs out, however the blocks
 * chain. Where a block would overrun the slice, or the code cannot be translated (MMIO or an
 * instruction crossing a page), the interpreter runs one instruction: instruction counts stay
 * exact, so the virtual clock sees the same time as under the interpreter.
 */
import type { Cpu } from "../cpu.js";
import { Cr0, Seg } from "../registers.js";
import { buildBlock } from "./block_builder.js";
import { Block, BlockCache, modeKey } from "./block_cache.js";
import type { BtStats } from "./bt_stats.js";
import { emitBlock, type VmmCounters } from "./emitter.js";

/** What the translator needs from the SoftCpu: its fetch path and its interpreter. */
export interface InterpreterFallback {
  /** Makes the page of `linear` the fetch page (c.fetchLinPage = -1 when it is not RAM). */
  fetchPage(linear: number): void;
  /** Runs one instruction as the interpreter does (decrements c.slice, counts it). */
  interpretOne(): void;
  /** Records a block entry for crash reports. */
  noteEntry(linear: number): void;
}

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
  private epoch = 0;
  private blocksTranslated = 0;
  private guestBytes = 0;
  private translateNs = 0;
  private chainHits = 0;
  private executions = 0;

  constructor(
    private readonly c: Cpu,
    private readonly interp: InterpreterFallback,
    cacheLimit?: number,
  ) {
    this.cache = new BlockCache(c.codePage.length, cacheLimit);
    c.onCodeWrite = (page) => this.cache.dropPage(page);
  }

  /** Runs instructions until the slice is used up (c.slice <= 0), as SoftCpu.execute does. */
  execute(): void {
    const c = this.c;
    let blk: Block | undefined;
    let prev: Block | undefined;
    while (c.slice > 0) {
      if (c.fetchLinPage === -1) {
        // A TLB flush, mode change or code write: no chain made before it may be followed.
        this.epoch++;
        blk = undefined;
        prev = undefined;
      }
      if (blk === undefined) {
        c.startEip = c.eip;
        blk = this.lookup();
        if (prev !== undefined && blk !== undefined) this.link(prev, blk);
      }
      if (blk === undefined || blk.count > c.slice) {
        this.interp.interpretOne();
        blk = undefined;
        prev = undefined;
        continue;
      }
      this.executions++;
      blk.fn();
      prev = blk;
      const e = c.eip;
      const epoch = this.epoch;
      let nb: Block | undefined;
      if (e === blk.chainEip0 && blk.epoch0 === epoch) nb = blk.chain0;
      else if (e === blk.chainEip1 && blk.epoch1 === epoch) nb = blk.chain1;
      if (nb?.valid && c.fetchLinPage !== -1) {
        this.chainHits++;
        blk = nb;
        prev = undefined;
      } else blk = undefined;
    }
  }

  private link(prev: Block, next: Block): void {
    if (prev.chain0 === undefined || prev.epoch0 !== this.epoch || !prev.chain0.valid) {
      prev.chain0 = next;
      prev.chainEip0 = next.eip;
      prev.epoch0 = this.epoch;
    } else {
      prev.chain1 = next;
      prev.chainEip1 = next.eip;
      prev.epoch1 = this.epoch;
    }
  }

  private lookup(): Block | undefined {
    const c = this.c;
    const eip = c.eip;
    const linear = (c.segBase[Seg.CS]! + eip) | 0;
    this.interp.noteEntry(linear);
    this.interp.fetchPage(linear);
    if (c.fetchLinPage === -1) return undefined; // not RAM: the interpreter fetches from MMIO
    const page = c.fetchPhysPage;
    const off = linear & 0xfff;
    const mode = modeKey(c.cs32, c.ss32, c.cpl, (c.cr0 & Cr0.PG) !== 0);
    const b = this.cache.get(page, off, mode);
    if (b !== undefined && b.eip === eip) return b;
    return this.translate(eip, linear, page, off, mode);
  }

  private translate(eip: number, linear: number, page: number, off: number, mode: number): Block | undefined {
    const c = this.c;
    const t0 = performance.now();
    const code = buildBlock(c, eip, linear);
    if (code.insns.length === 0) return undefined;
    const name = (linear >>> 0).toString(16).padStart(8, "0");
    const { fn } = emitBlock(c, code, name, c.rcheck, c.wcheck, c.ss32, this.vmm);
    const b = new Block(fn, eip, page, code.insns.length);
    this.cache.put(page, off, mode, b);
    c.codePage[page] = 1;
    this.blocksTranslated++;
    this.guestBytes += code.bytes;
    this.translateNs += (performance.now() - t0) * 1e6;
    return b;
  }

  /** Copies the counters into `stats` (SoftCpu.stats.bt). */
  syncStats(stats: BtStats): void {
    stats.blocksTranslated = this.blocksTranslated;
    stats.guestBytesTranslated = this.guestBytes;
    stats.blocksInvalidated = this.cache.invalidated;
    stats.blocksEvicted = this.cache.evicted;
    stats.chainHits = this.chainHits;
    stats.blockExecutions = this.executions;
    stats.translateNs = Math.round(this.translateNs);
    stats.cacheBlocks = this.cache.size;
    for (let k = 0; k < this.vmm.kinds.length; k++) stats.vmmCalls[this.vmm.kinds[k]!] = this.vmm.counts[k]!;
  }
}
