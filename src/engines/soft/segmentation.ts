/**
 * Segmentation and control transfers between privilege levels (SDM vol. 3 ch. 3, 5, 6, 7):
 * descriptor loads with their checks, far JMP/CALL/RET, interrupt and exception delivery through
 * the IDT (interrupt and trap gates, TSS stack switch), IRET, and the real-mode equivalents.
 */
import type { Cpu } from "./cpu.js";
import { canChangeIf, canChangeIopl } from "./privilege.js";
import { Flag, Reg, Seg, Vec } from "./registers.js";

/** Descriptor fields decoded by `readDescriptor` (one shared scratch record, no allocation). */
export const desc = { lo: 0, hi: 0, base: 0, limit: 0, attr: 0, addr: 0 };

/** Descriptor attribute helpers over `attr` = descriptor bits 40-55. */
export function dplOf(attr: number): number {
  return (attr >> 5) & 3;
}
function present(attr: number): boolean {
  return (attr & 0x80) !== 0;
}
function isCode(attr: number): boolean {
  return (attr & 0x18) === 0x18;
}
function isData(attr: number): boolean {
  return (attr & 0x18) === 0x10;
}

/**
 * Reads the GDT/LDT descriptor of `sel` into `desc`. Raises #GP(sel) (or `vector`) when the
 * selector is outside the table. Returns false for a null selector.
 */
export function readDescriptor(c: Cpu, sel: number, vector: number = Vec.GP): boolean {
  if ((sel & 0xfffc) === 0) return false;
  const index = sel & 0xfff8;
  let base: number;
  let limit: number;
  if ((sel & 4) !== 0) {
    base = c.segBase[Seg.LDTR]!;
    limit = c.segLimit[Seg.LDTR]! >>> 0;
    if ((c.segSel[Seg.LDTR]! & 0xfffc) === 0) c.fault(vector, sel & 0xfffc);
  } else {
    base = c.gdtBase;
    limit = c.gdtLimit;
  }
  if (index + 7 > limit) c.fault(vector, sel & 0xfffc);
  const addr = (base + index) | 0;
  const lo = c.readSys32(addr);
  const hi = c.readSys32((addr + 4) | 0);
  desc.lo = lo;
  desc.hi = hi;
  desc.addr = addr;
  desc.base = (lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000) | 0;
  let lim = (lo & 0xffff) | (hi & 0xf0000);
  if ((hi & 0x800000) !== 0) lim = (lim << 12) | 0xfff;
  desc.limit = lim | 0;
  desc.attr = (hi >>> 8) & 0xffff;
  return true;
}

/** Sets the accessed bit of the descriptor just read (SDM vol. 3 ch. 3.4.5.1). */
function markAccessed(c: Cpu): void {
  if ((desc.hi & 0x100) === 0) {
    desc.hi |= 0x100;
    c.writeSys8((desc.addr + 5) | 0, (desc.hi >>> 8) & 0xff);
  }
}

/** Loads the hidden part of segment register `s` from `desc`. */
function setSegment(c: Cpu, s: number, sel: number): void {
  c.segSel[s] = sel & 0xffff;
  c.segBase[s] = desc.base;
  c.segLimit[s] = desc.limit;
  c.segAttr[s] = desc.attr;
}

/**
 * MOV/POP/LDS... to a data segment register or SS, in the current mode, with the checks of
 * SDM vol. 2 "MOV" (protected mode): #GP(sel) on type/privilege, #NP / #SS when not present.
 */
export function loadSegment(c: Cpu, s: number, sel: number): void {
  sel &= 0xffff;
  if (!c.protectedMode) {
    c.segSel[s] = sel;
    c.segBase[s] = sel << 4;
    if ((c.flags & Flag.VM) !== 0) {
      c.segLimit[s] = 0xffff;
      c.segAttr[s] = s === Seg.CS ? 0x9b : 0x93;
    }
    if (s === Seg.SS || s === Seg.CS) c.updateMode();
    return;
  }
  const rpl = sel & 3;
  if (s === Seg.SS) {
    if ((sel & 0xfffc) === 0) c.gp(0);
    readDescriptor(c, sel);
    const a = desc.attr;
    if (rpl !== c.cpl || dplOf(a) !== c.cpl || !isData(a) || (a & 2) === 0) c.gp(sel & 0xfffc);
    if (!present(a)) c.fault(Vec.SS, sel & 0xfffc);
    markAccessed(c);
    setSegment(c, s, sel);
    c.updateMode();
    return;
  }
  if ((sel & 0xfffc) === 0) {
    // A null selector may be loaded into DS/ES/FS/GS; using it faults (not modelled: base 0).
    c.segSel[s] = sel;
    c.segBase[s] = 0;
    c.segLimit[s] = 0;
    c.segAttr[s] = 0;
    return;
  }
  readDescriptor(c, sel);
  const a = desc.attr;
  if (!isData(a) && !(isCode(a) && (a & 2) !== 0)) c.gp(sel & 0xfffc);
  const conformingCode = isCode(a) && (a & 4) !== 0;
  if (!conformingCode && (rpl > dplOf(a) || c.cpl > dplOf(a))) c.gp(sel & 0xfffc);
  if (!present(a)) c.fault(Vec.NP, sel & 0xfffc);
  markAccessed(c);
  setSegment(c, s, sel);
}

/** Loads CS from `desc` for a transfer to privilege `cpl` (checks done by the caller). */
function loadCs(c: Cpu, sel: number, cpl: number): void {
  markAccessed(c);
  setSegment(c, Seg.CS, (sel & 0xfffc) | cpl);
  c.cpl = cpl;
  c.updateMode();
}

/** Checks a code-segment descriptor (in `desc`) as the target of a far JMP/CALL (no gates). */
function checkFarTarget(c: Cpu, sel: number): void {
  const a = desc.attr;
  if (!isCode(a)) c.gp(sel & 0xfffc);
  if ((a & 4) !== 0) {
    if (dplOf(a) > c.cpl) c.gp(sel & 0xfffc);
  } else if ((sel & 3) > c.cpl || dplOf(a) !== c.cpl) c.gp(sel & 0xfffc);
  if (!present(a)) c.fault(Vec.NP, sel & 0xfffc);
}

/** JMP ptr16:16/32 and JMP m16:16/32 (same privilege; call gates and task switches unsupported). */
export function farJump(c: Cpu, sel: number, eip: number, size: number): void {
  if (!c.protectedMode) {
    loadSegment(c, Seg.CS, sel);
    c.eip = size === 4 ? eip : eip & 0xffff;
    return;
  }
  if (!readDescriptor(c, sel)) c.gp(0);
  if ((desc.attr & 0x10) === 0) {
    callGate(c, sel, false);
    return;
  }
  checkFarTarget(c, sel);
  loadCs(c, sel, c.cpl);
  c.eip = size === 4 ? eip : eip & 0xffff;
}

/** CALL ptr16:16/32 and CALL m16:16/32: to a code segment, or through a call gate. */
export function farCall(c: Cpu, sel: number, eip: number, size: number): void {
  const oldCs = c.segSel[Seg.CS]!;
  const oldEip = c.eip;
  if (c.protectedMode) {
    if (!readDescriptor(c, sel)) c.gp(0);
    if ((desc.attr & 0x10) === 0) {
      callGate(c, sel, true);
      return;
    }
    checkFarTarget(c, sel);
  }
  // Push first (may fault) with the old CS still loaded.
  const sp = c.regs[Reg.ESP]!;
  c.push(size, oldCs);
  try {
    c.push(size, oldEip);
  } catch (e) {
    c.regs[Reg.ESP] = sp;
    throw e;
  }
  if (c.protectedMode) {
    readDescriptor(c, sel);
    loadCs(c, sel, c.cpl);
  } else loadSegment(c, Seg.CS, sel);
  c.eip = size === 4 ? eip : eip & 0xffff;
}

/**
 * A far CALL or JMP through the call gate in `desc` (SDM vol. 3 ch. 5.8.3-5.8.5): gate DPL >= CPL
 * and RPL, target code DPL <= CPL; a CALL to a more privileged non-conforming segment switches to
 * the TSS stack of that level and copies the gate's parameter count of stack words.
 */
function callGate(c: Cpu, sel: number, call: boolean): void {
  const type = desc.attr & 0x1f;
  if (type !== 0x0c && type !== 0x04) c.gp(sel & 0xfffc); // task gates and TSS: not supported
  const gateDpl = dplOf(desc.attr);
  if (gateDpl < c.cpl || gateDpl < (sel & 3)) c.gp(sel & 0xfffc);
  if ((desc.attr & 0x80) === 0) c.fault(Vec.NP, sel & 0xfffc);
  const gate32 = type === 0x0c;
  const size = gate32 ? 4 : 2;
  const target = gate32 ? (desc.lo & 0xffff) | (desc.hi & 0xffff0000) : desc.lo & 0xffff;
  const params = desc.hi & 0x1f;
  const csSel = desc.lo >>> 16;
  if (!readDescriptor(c, csSel)) c.gp(0);
  const a = desc.attr;
  if (!isCode(a) || dplOf(a) > c.cpl) c.gp(csSel & 0xfffc);
  if (!present(a)) c.fault(Vec.NP, csSel & 0xfffc);
  const conforming = (a & 4) !== 0;
  const oldCs = c.segSel[Seg.CS]!;
  const oldEip = c.eip;
  if (!call) {
    if (!conforming && dplOf(a) !== c.cpl) c.gp(csSel & 0xfffc);
    loadCs(c, csSel, c.cpl);
    c.eip = target;
    return;
  }
  if (conforming || dplOf(a) === c.cpl) {
    const sp = c.regs[Reg.ESP]!;
    try {
      c.push(size, oldCs);
      c.push(size, oldEip);
    } catch (e) {
      c.regs[Reg.ESP] = sp;
      throw e;
    }
    loadCs(c, csSel, c.cpl);
    c.eip = target;
    return;
  }
  const newCpl = dplOf(a);
  const csLo = desc.lo;
  const csHi = desc.hi;
  const csAddr = desc.addr;
  const tss = c.segBase[Seg.TR]!;
  const newSsSel = c.readSys16((tss + 8 + newCpl * 8) | 0);
  const newEsp = c.readSys32((tss + 4 + newCpl * 8) | 0);
  checkStackSegment(c, newSsSel, newCpl, Vec.TS);
  const ssBase = desc.base;
  const ss32 = (desc.attr & 0x4000) !== 0;
  // Parameters from the caller's stack (read before anything changes).
  const copied: number[] = [];
  for (let k = params - 1; k >= 0; k--) copied.push(c.peek(size, k * size));
  const oldSs = c.segSel[Seg.SS]!;
  const oldEsp = c.regs[Reg.ESP]!;
  let sp = newEsp;
  const push = (v: number) => {
    sp = ss32 ? (sp - size) | 0 : (sp - size) & 0xffff;
    const p = c.translate((ssBase + sp) | 0, true, newCpl === 3);
    if (size === 4) c.physWrite32(p, v);
    else c.physWrite16(p, v);
  };
  push(oldSs);
  push(oldEsp);
  for (const v of copied) push(v);
  push(oldCs);
  push(oldEip);
  markAccessed(c);
  setSegment(c, Seg.SS, newSsSel);
  c.regs[Reg.ESP] = sp;
  restoreDesc(csLo, csHi, csAddr);
  loadCs(c, csSel, newCpl);
  c.eip = target;
}

/**
 * The return to an outer privilege level that far RET and IRET share (SDM Vol. 2, RET and IRET):
 * the new SS is checked while the CS descriptor already read is kept aside (both pass through the
 * one `desc` scratch record), then CS is loaded at RPL and SS after it, so a fault in the SS
 * checks leaves CS untouched.
 */
function loadOuterCsSs(c: Cpu, sel: number, rpl: number, newSs: number): void {
  const csLo = desc.lo;
  const csHi = desc.hi;
  const csAddr = desc.addr;
  checkStackSegment(c, newSs, rpl);
  const ssLo = desc.lo;
  const ssHi = desc.hi;
  const ssAddr = desc.addr;
  restoreDesc(csLo, csHi, csAddr);
  loadCs(c, sel, rpl);
  restoreDesc(ssLo, ssHi, ssAddr);
  markAccessed(c);
  setSegment(c, Seg.SS, newSs);
}

/** RETF [imm16]: same-privilege and return to an outer ring (SDM vol. 2 "RET"). */
export function farReturn(c: Cpu, size: number, imm: number): void {
  const eip = c.peek(size, 0);
  const sel = c.peek(size, size) & 0xffff;
  if (!c.protectedMode) {
    c.adjustSp(2 * size + imm);
    loadSegment(c, Seg.CS, sel);
    c.eip = size === 4 ? eip : eip & 0xffff;
    return;
  }
  const rpl = sel & 3;
  if (rpl < c.cpl) c.gp(sel & 0xfffc);
  if (!readDescriptor(c, sel)) c.gp(0);
  const a = desc.attr;
  if (!isCode(a)) c.gp(sel & 0xfffc);
  if ((a & 4) !== 0 ? dplOf(a) > rpl : dplOf(a) !== rpl) c.gp(sel & 0xfffc);
  if (!present(a)) c.fault(Vec.NP, sel & 0xfffc);
  if (rpl === c.cpl) {
    c.adjustSp(2 * size + imm);
    loadCs(c, sel, rpl);
    c.eip = size === 4 ? eip : eip & 0xffff;
    return;
  }
  const newEsp = c.peek(size, 2 * size + imm);
  const newSs = c.peek(size, 3 * size + imm) & 0xffff;
  loadOuterCsSs(c, sel, rpl, newSs);
  c.updateMode();
  c.regs[Reg.ESP] = size === 4 ? newEsp + imm : (newEsp + imm) & 0xffff;
  c.eip = size === 4 ? eip : eip & 0xffff;
  nullifyOuterSegments(c);
}

function restoreDesc(lo: number, hi: number, addr: number): void {
  desc.lo = lo;
  desc.hi = hi;
  desc.addr = addr;
  desc.base = (lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000) | 0;
  let lim = (lo & 0xffff) | (hi & 0xf0000);
  if ((hi & 0x800000) !== 0) lim = (lim << 12) | 0xfff;
  desc.limit = lim | 0;
  desc.attr = (hi >>> 8) & 0xffff;
}

/** Checks SS selector `sel` for use at privilege `cpl` (leaves its descriptor in `desc`). */
function checkStackSegment(c: Cpu, sel: number, cpl: number, vector: number = Vec.GP): void {
  if ((sel & 0xfffc) === 0) c.fault(vector, 0);
  readDescriptor(c, sel, vector);
  const a = desc.attr;
  if ((sel & 3) !== cpl || dplOf(a) !== cpl || !isData(a) || (a & 2) === 0) c.fault(vector, sel & 0xfffc);
  if (!present(a)) c.fault(Vec.SS, sel & 0xfffc);
}

/** After a return to an outer ring, data segments more privileged than the new CPL become null. */
function nullifyOuterSegments(c: Cpu): void {
  for (const s of [Seg.ES, Seg.DS, Seg.FS, Seg.GS]) {
    const a = c.segAttr[s]!;
    if ((c.segSel[s]! & 0xfffc) === 0) continue;
    const conformingCode = isCode(a) && (a & 4) !== 0;
    if (!conformingCode && dplOf(a) < c.cpl) {
      c.segSel[s] = 0;
      c.segBase[s] = 0;
      c.segLimit[s] = 0;
      c.segAttr[s] = 0;
    }
  }
}

/**
 * Delivers interrupt or exception `vector` (SDM vol. 3 ch. 6.12): `software` for INT n/INT3/INTO
 * (gate DPL checked against CPL), `code` >= 0 pushes an error code, `fault` sets RF in the pushed
 * EFLAGS (SDM vol. 3 ch. 17.3.1.1). EIP must already hold the
 * return address (the next instruction for traps and INT n, the faulting one for faults).
 */
export function deliverInterrupt(
  c: Cpu,
  vector: number,
  software: boolean,
  code: number,
  fault = false,
): void {
  c.halted = false;
  if (!c.protectedMode) {
    const ivt = (c.idtBase + vector * 4) | 0;
    const target = c.read32(ivt);
    const flags = c.getEflags();
    c.push16(flags);
    c.push16(c.segSel[Seg.CS]!);
    c.push16(c.eip);
    c.flags &= ~(Flag.IF | Flag.TF | Flag.AC | Flag.RF);
    loadSegment(c, Seg.CS, target >>> 16);
    c.eip = target & 0xffff;
    return;
  }
  const ext = software ? 0 : 1;
  if (vector * 8 + 7 > c.idtLimit) c.gp(vector * 8 + 2 + ext);
  const gate = (c.idtBase + vector * 8) | 0;
  const lo = c.readSys32(gate);
  const hi = c.readSys32((gate + 4) | 0);
  const type = (hi >>> 8) & 0x1f;
  if (type === 0x05) {
    c.shutdownReason = `task gate for vector ${vector} (task switches are not implemented)`;
    throw TASK_SWITCH;
  }
  if (type !== 0x0e && type !== 0x0f && type !== 0x06 && type !== 0x07) c.gp(vector * 8 + 2 + ext);
  const gateDpl = (hi >>> 13) & 3;
  if (software && gateDpl < c.cpl) c.gp(vector * 8 + 2);
  if ((hi & 0x8000) === 0) c.fault(Vec.NP, vector * 8 + 2 + ext);
  const gate32 = (type & 8) !== 0;
  const sel = lo >>> 16;
  const target = gate32 ? (lo & 0xffff) | (hi & 0xffff0000) : lo & 0xffff;
  if ((sel & 0xfffc) === 0) c.gp(ext);
  readDescriptor(c, sel);
  const a = desc.attr;
  if (!isCode(a) || dplOf(a) > c.cpl) c.gp((sel & 0xfffc) + ext);
  if (!present(a)) c.fault(Vec.NP, (sel & 0xfffc) + ext);
  const csLo = desc.lo;
  const csHi = desc.hi;
  const csAddr = desc.addr;
  const newCpl = (a & 4) !== 0 ? c.cpl : dplOf(a);
  // A fault pushes EFLAGS with RF set, so the restarted instruction skips instruction breakpoints.
  const flags = fault ? c.getEflags() | Flag.RF : c.getEflags();
  const oldCs = c.segSel[Seg.CS]!;
  const oldEip = c.eip;
  const size = gate32 ? 4 : 2;
  if (newCpl < c.cpl) {
    // Inter-privilege: the new stack comes from the TSS (32-bit TSS: ESPn at 4+8n, SSn at 8+8n).
    const tss = c.segBase[Seg.TR]!;
    const newSsSel = c.readSys16((tss + 8 + newCpl * 8) | 0);
    const newEsp = c.readSys32((tss + 4 + newCpl * 8) | 0);
    checkStackSegment(c, newSsSel, newCpl, Vec.TS);
    const ssBase = desc.base;
    const ss32 = (desc.attr & 0x4000) !== 0;
    const oldSs = c.segSel[Seg.SS]!;
    const oldEsp = c.regs[Reg.ESP]!;
    let sp = newEsp;
    const user = newCpl === 3;
    const push = (v: number) => {
      sp = ss32 ? (sp - size) | 0 : (sp - size) & 0xffff;
      const p = c.translate((ssBase + sp) | 0, true, user);
      if (size === 4) c.physWrite32(p, v);
      else c.physWrite16(p, v);
    };
    push(oldSs);
    push(oldEsp);
    push(flags);
    push(oldCs);
    push(oldEip);
    if (code >= 0) push(code);
    markAccessed(c);
    setSegment(c, Seg.SS, newSsSel);
    c.regs[Reg.ESP] = sp;
    if ((c.flags & Flag.VM) !== 0) {
      for (const s of [Seg.ES, Seg.DS, Seg.FS, Seg.GS]) {
        c.segSel[s] = 0;
        c.segBase[s] = 0;
        c.segAttr[s] = 0;
      }
    }
  } else {
    const sp = c.regs[Reg.ESP]!;
    try {
      c.push(size, flags);
      c.push(size, oldCs);
      c.push(size, oldEip);
      if (code >= 0) c.push(size, code);
    } catch (e) {
      c.regs[Reg.ESP] = sp;
      throw e;
    }
  }
  c.flags &= ~(Flag.TF | Flag.NT | Flag.RF | Flag.VM);
  if ((type & 1) === 0) c.flags &= ~Flag.IF;
  restoreDesc(csLo, csHi, csAddr);
  loadCs(c, sel, newCpl);
  c.eip = target;
}

/** Thrown when a gate would need a hardware task switch (the CPU reports a shutdown). */
export const TASK_SWITCH = { kind: "task-switch" } as const;

/** IRET / IRETD (SDM vol. 2 "IRET"): same privilege or return to an outer ring. */
export function iret(c: Cpu, size: number): void {
  c.nmiBlocked = false;
  if (!c.protectedMode) {
    const ip = c.peek(size, 0);
    const cs = c.peek(size, size) & 0xffff;
    const fl = c.peek(size, 2 * size);
    c.adjustSp(3 * size);
    loadSegment(c, Seg.CS, cs);
    c.eip = size === 4 ? ip : ip & 0xffff;
    const mask = size === 4 ? 0x257fd5 : 0x7fd5;
    setFlagsFromPop(c, fl, mask);
    return;
  }
  if ((c.flags & Flag.NT) !== 0) {
    c.shutdownReason = "IRET with EFLAGS.NT (task return) is not implemented";
    throw TASK_SWITCH;
  }
  const eip = c.peek(size, 0);
  const sel = c.peek(size, size) & 0xffff;
  const fl = size === 4 ? c.peek32(2 * size) : c.peek16(2 * size) | (c.flags & 0xffff0000);
  if ((fl & Flag.VM) !== 0 && c.cpl === 0) {
    c.shutdownReason = "IRET to virtual-8086 mode is not implemented";
    throw TASK_SWITCH;
  }
  const rpl = sel & 3;
  if ((sel & 0xfffc) === 0) c.gp(0);
  if (rpl < c.cpl) c.gp(sel & 0xfffc);
  readDescriptor(c, sel);
  const a = desc.attr;
  if (!isCode(a)) c.gp(sel & 0xfffc);
  if ((a & 4) !== 0 ? dplOf(a) > rpl : dplOf(a) !== rpl) c.gp(sel & 0xfffc);
  if (!present(a)) c.fault(Vec.NP, sel & 0xfffc);
  const oldCpl = c.cpl;
  const mask = size === 4 ? 0x257fd5 : 0x7fd5;
  if (rpl === c.cpl) {
    c.adjustSp(3 * size);
    loadCs(c, sel, rpl);
    c.eip = size === 4 ? eip : eip & 0xffff;
    setFlagsFromPopAt(c, fl, mask, oldCpl);
    return;
  }
  const newEsp = c.peek(size, 3 * size);
  const newSs = c.peek(size, 4 * size) & 0xffff;
  loadOuterCsSs(c, sel, rpl, newSs);
  c.regs[Reg.ESP] = size === 4 ? newEsp : (c.regs[Reg.ESP]! & ~0xffff) | (newEsp & 0xffff);
  c.eip = size === 4 ? eip : eip & 0xffff;
  setFlagsFromPopAt(c, fl, mask, oldCpl);
  c.updateMode();
  nullifyOuterSegments(c);
}

/** POPF/IRET flag rules at the current CPL. */
export function setFlagsFromPop(c: Cpu, value: number, mask: number): void {
  setFlagsFromPopAt(c, value, mask, c.cpl);
}

function setFlagsFromPopAt(c: Cpu, value: number, mask: number, cpl: number): void {
  const savedCpl = c.cpl;
  c.cpl = cpl;
  let m = mask & ~(Flag.VM | Flag.VIP | Flag.VIF);
  if (!canChangeIopl(c)) m &= ~Flag.IOPL;
  if (!canChangeIf(c)) m &= ~Flag.IF;
  c.cpl = savedCpl;
  const old = c.getEflags();
  c.flags = ((old & ~m) | (value & m) | Flag.FIXED) & ~0x8028;
  c.lop = 0;
}
