/**
 * The translator's code cache. A compiled block hangs off the interpreter's decoded record of its
 * first instruction (`Insn.btFn`), so it is found as that record is: by physical page and offset
 * (cpu.ts `codeCache`), and it goes with the page's records when the page is written (cpu.ts
 * `invalidateCode`: self-modifying code, module loading, page reuse): dropping is precise per
 * page. This file keeps the list of records with blocks per page, for the counts and for the
 * bound: over `limit` blocks everything is dropped (blocks are cheap to compile again).
 */
import type { Insn } from "../insn.js";

/** Mode bits of a block: what the emitted code depends on besides its bytes. */
export function modeKey(cs32: boolean, ss32: boolean, cpl: number, paging: boolean): number {
  return (cs32 ? 1 : 0) | (ss32 ? 2 : 0) | (cpl === 3 ? 4 : 0) | (paging ? 8 : 0);
}

export class BlockCache {
  private readonly pages = new Map<number, Insn[]>();
  size = 0;
  invalidated = 0;
  evicted = 0;

  constructor(readonly limit = 32768) {}

  /** `insn` (in physical page `page`) now has a compiled block. */
  add(page: number, insn: Insn): void {
    if (this.size >= this.limit) this.clear();
    let list = this.pages.get(page);
    if (list === undefined) {
      list = [];
      this.pages.set(page, list);
    }
    list.push(insn);
    this.size++;
  }

  /** The page was written: its records (and so its blocks) are gone. */
  dropPage(page: number): void {
    const list = this.pages.get(page);
    if (list === undefined) return;
    this.invalidated += list.length;
    this.size -= list.length;
    this.pages.delete(page);
  }

  /** Drops every block (the cache is full); their entries count as cold again. */
  clear(): void {
    for (const list of this.pages.values()) {
      for (const i of list) {
        i.btFn = undefined;
        i.btHits = 0;
      }
      this.evicted += list.length;
    }
    this.pages.clear();
    this.size = 0;
  }
}
