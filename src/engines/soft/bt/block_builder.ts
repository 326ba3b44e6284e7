/**
 * Cuts guest code into blocks for the translator with the one decoder (`decoder.ts`, the same
 * table the interpreter uses): a block runs from its entry to the first control transfer or
 * serialising instruction (`Insn.blockEnd`), and stops earlier before an instruction that does not
 * fit in the entry's page (a block lives in one physical page, so a write to that page drops it),
 * before an instruction whose bytes cannot be fetched (the fault is the interpreter's to raise
 * when execution gets there), and at a maximum length (so a block never outlasts the run loop's
 * slice: interrupt latency stays bounded).
 */
import type { Cpu } from "../cpu.js";
import { decode } from "../decoder.js";
import type { Insn } from "../insn.js";

/** Longest block, in instructions (well under the run loop's slice of 2048). */
export const MAX_BLOCK_INSNS = 64;

export interface BlockCode {
  /** The decoded instructions, in order. */
  insns: Insn[];
  /** EIP of each instruction (offset in CS), then the EIP after the last one. */
  eips: number[];
  /** Bytes of guest code covered. */
  bytes: number;
}

/**
 * Decodes the block at `eip` (linear address `linear`, CS base included) in the CPU's current
 * mode. A fault decoding the first instruction propagates (the fetch faults, as in the
 * interpreter); a fault on a later one ends the block before it. An empty block means the first
 * instruction crosses the page end.
 */
export function buildBlock(c: Cpu, eip: number, linear: number, max = MAX_BLOCK_INSNS): BlockCode {
  const insns: Insn[] = [];
  const eips: number[] = [];
  let e = eip;
  let lin = linear;
  /** Offset of `lin` in the entry's page. */
  let off = linear & 0xfff;
  for (;;) {
    let insn: Insn;
    if (insns.length === 0) insn = decode(c, lin);
    // Near the page end a later instruction might reach into the next page (possibly MMIO, where
    // a fetch has side effects): leave it to a block of its own.
    else if (off > 0x1000 - 16) break;
    else {
      try {
        insn = decode(c, lin);
      } catch {
        break;
      }
    }
    // An instruction crossing into the next page belongs to no block (the interpreter runs it).
    if (off + insn.len > 0x1000) break;
    insns.push(insn);
    eips.push(e);
    e = c.cs32 ? (e + insn.len) | 0 : (e + insn.len) & 0xffff;
    lin = (lin + insn.len) | 0;
    off += insn.len;
    if (insn.blockEnd || insns.length >= max || off === 0x1000) break;
  }
  eips.push(e);
  return { insns, eips, bytes: off - (linear & 0xfff) };
}
