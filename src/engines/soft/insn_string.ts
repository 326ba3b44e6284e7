/**
 * String instructions with REP/REPE/REPNE (SDM vol. 2 "REP"): MOVS, CMPS, STOS, LODS, SCAS, INS,
 * OUTS. Each iteration commits ESI/EDI/ECX after its memory accesses, so a fault in the middle
 * restarts the instruction with the remaining count. REP MOVS and REP STOS have a fast path that
 * copies or fills whole runs inside one page of guest RAM.
 */
import type { Cpu } from "./cpu.js";
import { alu } from "./insn_alu.js";
import type { Insn } from "./insn.js";
import { checkIo } from "./privilege.js";
import { Flag, Reg, Seg } from "./registers.js";

function counter(c: Cpu, i: Insn): number {
  return i.addr32 ? c.regs[Reg.ECX]! >>> 0 : c.regs16[Reg.ECX << 1]!;
}
function setCounter(c: Cpu, i: Insn, n: number): void {
  if (i.addr32) c.regs[Reg.ECX] = n;
  else c.regs16[Reg.ECX << 1] = n;
}
function idx(c: Cpu, i: Insn, r: number): number {
  return i.addr32 ? c.regs[r]! : c.regs16[r << 1]!;
}
function setIdx(c: Cpu, i: Insn, r: number, v: number): void {
  if (i.addr32) c.regs[r] = v;
  else c.regs16[r << 1] = v;
}

/**
 * Fast REP MOVS / REP STOS run: copies or fills as many elements as fit in the current source and
 * destination pages of RAM (DF=0). Returns the number of elements done (0 = take the slow path).
 */
function fastRun(c: Cpu, i: Insn, count: number, movs: boolean): number {
  const s = i.size;
  const dLin = (c.segBase[Seg.ES]! + c.regs[Reg.EDI]!) | 0;
  const de = c.tlb[dLin >>> 12]!;
  if ((de & c.wcheck) !== c.wcheck) return 0;
  let n = Math.min(count, ((0x1000 - (dLin & 0xfff)) / s) | 0);
  const dp = ((de & ~0xfff) | (dLin & 0xfff)) >>> 0;
  if (c.codePage[dp >>> 12] !== 0) c.invalidateCode(dp);
  if (movs) {
    const sLin = (c.segBase[i.seg]! + c.regs[Reg.ESI]!) | 0;
    const se = c.tlb[sLin >>> 12]!;
    if ((se & c.rcheck) !== c.rcheck) return 0;
    n = Math.min(n, ((0x1000 - (sLin & 0xfff)) / s) | 0);
    if (n <= 0) return 0;
    const sp = ((se & ~0xfff) | (sLin & 0xfff)) >>> 0;
    const bytes = n * s;
    // Overlapping forward copies must behave element by element (memmove semantics differ).
    if (dp > sp && dp < sp + bytes) {
      for (let k = 0; k < bytes; k++) c.mem8[dp + k] = c.mem8[sp + k]!;
    } else c.mem8.copyWithin(dp, sp, sp + bytes);
    c.regs[Reg.ESI] = (c.regs[Reg.ESI]! + bytes) | 0;
  } else {
    if (n <= 0) return 0;
    const v = c.getReg(s, Reg.EAX);
    if (s === 1) c.mem8.fill(v, dp, dp + n);
    else if (s === 4 && (dp & 3) === 0) c.mem32.fill(v, dp >>> 2, (dp >>> 2) + n);
    else if (s === 2 && (dp & 1) === 0) c.mem16.fill(v, dp >>> 1, (dp >>> 1) + n);
    else return 0;
  }
  c.regs[Reg.EDI] = (c.regs[Reg.EDI]! + n * s) | 0;
  c.regs[Reg.ECX] = (c.regs[Reg.ECX]! - n) | 0;
  return n;
}

/** A4/A5 MOVS. */
export function movs(c: Cpu, i: Insn): void {
  const s = i.size;
  const delta = (c.flags & Flag.DF) !== 0 ? -s : s;
  if (i.rep === 0) {
    const v = c.read((c.segBase[i.seg]! + idx(c, i, Reg.ESI)) | 0, s);
    c.write((c.segBase[Seg.ES]! + idx(c, i, Reg.EDI)) | 0, s, v);
    setIdx(c, i, Reg.ESI, idx(c, i, Reg.ESI) + delta);
    setIdx(c, i, Reg.EDI, idx(c, i, Reg.EDI) + delta);
    return;
  }
  let n = counter(c, i);
  while (n > 0) {
    if (delta > 0 && i.addr32) {
      const done = fastRun(c, i, n, true);
      if (done > 0) {
        n -= done;
        continue;
      }
    }
    const v = c.read((c.segBase[i.seg]! + idx(c, i, Reg.ESI)) | 0, s);
    c.write((c.segBase[Seg.ES]! + idx(c, i, Reg.EDI)) | 0, s, v);
    setIdx(c, i, Reg.ESI, idx(c, i, Reg.ESI) + delta);
    setIdx(c, i, Reg.EDI, idx(c, i, Reg.EDI) + delta);
    setCounter(c, i, --n);
  }
}

/** AA/AB STOS. */
export function stos(c: Cpu, i: Insn): void {
  const s = i.size;
  const delta = (c.flags & Flag.DF) !== 0 ? -s : s;
  const v = c.getReg(s, Reg.EAX);
  if (i.rep === 0) {
    c.write((c.segBase[Seg.ES]! + idx(c, i, Reg.EDI)) | 0, s, v);
    setIdx(c, i, Reg.EDI, idx(c, i, Reg.EDI) + delta);
    return;
  }
  let n = counter(c, i);
  while (n > 0) {
    if (delta > 0 && i.addr32) {
      const done = fastRun(c, i, n, false);
      if (done > 0) {
        n -= done;
        continue;
      }
    }
    c.write((c.segBase[Seg.ES]! + idx(c, i, Reg.EDI)) | 0, s, v);
    setIdx(c, i, Reg.EDI, idx(c, i, Reg.EDI) + delta);
    setCounter(c, i, --n);
  }
}

/** AC/AD LODS. */
export function lods(c: Cpu, i: Insn): void {
  const s = i.size;
  const delta = (c.flags & Flag.DF) !== 0 ? -s : s;
  let n = i.rep === 0 ? 1 : counter(c, i);
  while (n > 0) {
    const v = c.read((c.segBase[i.seg]! + idx(c, i, Reg.ESI)) | 0, s);
    c.setReg(s, Reg.EAX, v);
    setIdx(c, i, Reg.ESI, idx(c, i, Reg.ESI) + delta);
    n--;
    if (i.rep !== 0) setCounter(c, i, n);
  }
}

/** A6/A7 CMPS, AE/AF SCAS: REPE stops when ZF=0, REPNE when ZF=1. */
export function cmps(c: Cpu, i: Insn): void {
  const s = i.size;
  const delta = (c.flags & Flag.DF) !== 0 ? -s : s;
  let n = i.rep === 0 ? 1 : counter(c, i);
  while (n > 0) {
    const a = c.read((c.segBase[i.seg]! + idx(c, i, Reg.ESI)) | 0, s);
    const b = c.read((c.segBase[Seg.ES]! + idx(c, i, Reg.EDI)) | 0, s);
    alu(c, 7, s, a, b);
    setIdx(c, i, Reg.ESI, idx(c, i, Reg.ESI) + delta);
    setIdx(c, i, Reg.EDI, idx(c, i, Reg.EDI) + delta);
    n--;
    if (i.rep === 0) return;
    setCounter(c, i, n);
    if (c.getZF() !== (i.rep === 1 ? 1 : 0)) return;
  }
}
export function scas(c: Cpu, i: Insn): void {
  const s = i.size;
  const delta = (c.flags & Flag.DF) !== 0 ? -s : s;
  const a = c.getReg(s, Reg.EAX);
  let n = i.rep === 0 ? 1 : counter(c, i);
  while (n > 0) {
    const b = c.read((c.segBase[Seg.ES]! + idx(c, i, Reg.EDI)) | 0, s);
    alu(c, 7, s, a, b);
    setIdx(c, i, Reg.EDI, idx(c, i, Reg.EDI) + delta);
    n--;
    if (i.rep === 0) return;
    setCounter(c, i, n);
    if (c.getZF() !== (i.rep === 1 ? 1 : 0)) return;
  }
}

/** 6C/6D INS, 6E/6F OUTS (port DX). */
export function ins(c: Cpu, i: Insn): void {
  const s = i.size;
  const port = c.regs16[Reg.EDX << 1]!;
  checkIo(c, port, s);
  const delta = (c.flags & Flag.DF) !== 0 ? -s : s;
  let n = i.rep === 0 ? 1 : counter(c, i);
  while (n > 0) {
    const a = (c.segBase[Seg.ES]! + idx(c, i, Reg.EDI)) | 0;
    c.checkWrite(a, s);
    c.write(a, s, c.ports.read(port, s as 1 | 2 | 4));
    setIdx(c, i, Reg.EDI, idx(c, i, Reg.EDI) + delta);
    n--;
    if (i.rep !== 0) setCounter(c, i, n);
  }
}
export function outs(c: Cpu, i: Insn): void {
  const s = i.size;
  const port = c.regs16[Reg.EDX << 1]!;
  checkIo(c, port, s);
  const delta = (c.flags & Flag.DF) !== 0 ? -s : s;
  let n = i.rep === 0 ? 1 : counter(c, i);
  while (n > 0) {
    const v = c.read((c.segBase[i.seg]! + idx(c, i, Reg.ESI)) | 0, s);
    c.ports.write(port, s as 1 | 2 | 4, s === 4 ? v >>> 0 : v & ((1 << (s << 3)) - 1));
    setIdx(c, i, Reg.ESI, idx(c, i, Reg.ESI) + delta);
    n--;
    if (i.rep !== 0) setCounter(c, i, n);
  }
}
