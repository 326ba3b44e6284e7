/**
 * The translator's code cache: compiled blocks by physical page, then by (offset in the page,
 * mode). Dropping is precise per page: a write to a page holding blocks (cpu.ts `codePage`, the
 * same write tracking the interpreter's decoded records use) drops that page's blocks and nothing
 * else. The cache is bounded: over `limit` blocks it is cleared (blocks are cheap to translate
 * again; a clear keeps no stale chain anywhere, as every dropped block is marked invalid).
 */
import type { BlockFn } from "./emitter.js";

export class Block {
  /** Successor blocks by exit EIP (taken and fall-through), followed without a lookup. */
  chainEip0 = 0;
  chain0: Block | undefined = undefined;
  epoch0 = -1;
  chainEip1 = 0;
  chain1: Block | undefined = undefined;
  epoch1 = -1;
  valid = true;
  constructor(
    readonly fn: BlockFn,
    /** EIP (offset in CS) of the entry: the emitted code assumes it. */
    readonly eip: number,
    readonly physPage: number,
    readonly count: number,
  ) {}
}

/** Mode bits of a block key: what the emitted code depends on besides its bytes. */
export function modeKey(cs32: boolean, ss32: boolean, cpl: number, paging: boolean): number {
  return (cs32 ? 1 : 0) | (ss32 ? 2 : 0) | (cpl === 3 ? 4 : 0) | (paging ? 8 : 0);
}

export class BlockCache {
  private readonly pages: (Map<number, Block> | undefined)[];
  private readonly livePages = new Set<number>();
  size = 0;
  invalidated = 0;
  evicted = 0;

  constructor(
    pageCount: number,
    readonly limit = 32768,
  ) {
    this.pages = new Array(pageCount).fill(undefined);
  }

  get(page: number, offset: number, mode: number): Block | undefined {
    return this.pages[page]?.get(offset | (mode << 12));
  }

  put(page: number, offset: number, mode: number, block: Block): void {
    if (this.size >= this.limit) this.clear();
    let map = this.pages[page];
    if (map === undefined) {
      map = new Map();
      this.pages[page] = map;
      this.livePages.add(page);
    }
    const key = offset | (mode << 12);
    const old = map.get(key);
    if (old !== undefined) {
      old.valid = false;
      this.size--;
    }
    map.set(key, block);
    this.size++;
  }

  /** The page was written: drop its blocks. */
  dropPage(page: number): void {
    const map = this.pages[page];
    if (map === undefined) return;
    for (const b of map.values()) b.valid = false;
    this.invalidated += map.size;
    this.size -= map.size;
    this.pages[page] = undefined;
    this.livePages.delete(page);
  }

  /** Drops every block (the cache is full). */
  clear(): void {
    for (const page of this.livePages) {
      const map = this.pages[page]!;
      for (const b of map.values()) b.valid = false;
      this.evicted += map.size;
      this.pages[page] = undefined;
    }
    this.livePages.clear();
    this.size = 0;
  }
}
