/**
 * Control flow and the stack (SDM vol. 2): Jcc, JMP, CALL, RET, LOOP, INT, IRET, PUSH/POP and
 * their multi-register and flag forms, ENTER/LEAVE. EIP already points past the instruction when
 * a handler runs, so relative targets are `c.eip + imm`.
 */
import type { Cpu } from "./cpu.js";
import { type Insn, lin, readRm, writeRm } from "./insn.js";
import { requireCpl0, requireIopl, sensitiveNoTrap } from "./privilege.js";
import { Flag, Reg, Seg, Vec } from "./registers.js";
import {
  deliverInterrupt,
  farCall,
  farJump,
  farReturn,
  iret,
  loadSegment,
  setFlagsFromPop,
} from "./segmentation.js";

function target(_c: Cpu, i: Insn, t: number): number {
  return i.size === 4 ? t | 0 : t & 0xffff;
}

/** 70-7F Jcc rel8, 0F 80-8F Jcc rel16/32. */
export function jcc(c: Cpu, i: Insn): void {
  if (c.cond(i.opcode & 15)) c.eip = target(c, i, c.eip + i.imm);
}
/** EB JMP rel8, E9 JMP rel16/32. */
export function jmp_rel(c: Cpu, i: Insn): void {
  c.eip = target(c, i, c.eip + i.imm);
}
/** E8 CALL rel16/32. */
export function call_rel(c: Cpu, i: Insn): void {
  c.push(i.size, c.eip);
  c.eip = target(c, i, c.eip + i.imm);
}
/** FF /2 CALL near Ev. */
export function call_rm(c: Cpu, i: Insn): void {
  const t = readRm(c, i, i.size);
  c.push(i.size, c.eip);
  c.eip = target(c, i, t);
}
/** FF /4 JMP near Ev. */
export function jmp_rm(c: Cpu, i: Insn): void {
  c.eip = target(c, i, readRm(c, i, i.size));
}
/** C3 RET, C2 RET imm16. */
export function ret(c: Cpu, i: Insn): void {
  const t = c.peek(i.size, 0);
  c.adjustSp(i.size + (i.opcode === 0xc2 ? i.imm : 0));
  c.eip = target(c, i, t);
}
/** EA JMP ptr16:16/32. */
export function jmp_far(c: Cpu, i: Insn): void {
  farJump(c, i.imm2, i.imm, i.size);
}
/** 9A CALL ptr16:16/32. */
export function call_far(c: Cpu, i: Insn): void {
  farCall(c, i.imm2, i.imm, i.size);
}
/** FF /3 CALL m16:16/32, FF /5 JMP m16:16/32. */
export function callf_rm(c: Cpu, i: Insn): void {
  const a = lin(c, i);
  const off = c.read(a, i.size);
  const sel = c.read16((a + i.size) | 0);
  farCall(c, sel, off, i.size);
}
export function jmpf_rm(c: Cpu, i: Insn): void {
  const a = lin(c, i);
  const off = c.read(a, i.size);
  const sel = c.read16((a + i.size) | 0);
  farJump(c, sel, off, i.size);
}
/** CB RETF, CA RETF imm16. */
export function retf(c: Cpu, i: Insn): void {
  farReturn(c, i.size, i.opcode === 0xca ? i.imm : 0);
}

/** E0 LOOPNE, E1 LOOPE, E2 LOOP, E3 JCXZ (counter size = address size). */
export function loop(c: Cpu, i: Insn): void {
  let n: number;
  if (i.opcode === 0xe3) n = i.addr32 ? c.regs[Reg.ECX]! : c.regs16[Reg.ECX << 1]!;
  else if (i.addr32) n = c.regs[Reg.ECX] = (c.regs[Reg.ECX]! - 1) | 0;
  else n = c.regs16[Reg.ECX << 1] = (c.regs16[Reg.ECX << 1]! - 1) & 0xffff;
  let take: boolean;
  if (i.opcode === 0xe3) take = n === 0;
  else if (i.opcode === 0xe2) take = n !== 0;
  else if (i.opcode === 0xe1) take = n !== 0 && c.getZF() === 1;
  else take = n !== 0 && c.getZF() === 0;
  if (take) c.eip = target(c, i, c.eip + i.imm);
}

// ============================================================================ interrupts

/** CD INT imm8, CC INT3, CE INTO: software interrupts (trap: return to the next instruction). */
export function int_imm(c: Cpu, i: Insn): void {
  deliverInterrupt(c, i.imm & 0xff, true, -1);
}
export function int3(c: Cpu): void {
  deliverInterrupt(c, Vec.BP, true, -1);
}
export function into(c: Cpu): void {
  if (c.getOF()) deliverInterrupt(c, Vec.OF, true, -1);
}
/** 62 BOUND Gv, Ma: #BR (a fault) when the signed index is outside [lower, upper]. */
export function bound(c: Cpu, i: Insn): void {
  if (!i.isMem) c.ud();
  const a = lin(c, i);
  const s = i.size;
  const lower = s === 4 ? c.read32(a) : (c.read16(a) << 16) >> 16;
  const upper = s === 4 ? c.read32((a + 4) | 0) : (c.read16((a + 2) | 0) << 16) >> 16;
  const index = s === 4 ? c.regs[i.reg]! : (c.regs16[i.reg << 1]! << 16) >> 16;
  if (index < lower || index > upper) c.fault(Vec.BR);
}
/** CF IRET. */
export function iret_(c: Cpu, i: Insn): void {
  iret(c, i.size);
  c.slice = 0; // IF may have been set: let the run loop look at interrupts
}
/** F4 HLT. */
export function hlt(c: Cpu): void {
  requireCpl0(c, "hlt");
  c.halted = true;
  c.slice = 0;
}
/** FA CLI, FB STI (STI holds off interrupts until after the next instruction). */
export function cli(c: Cpu): void {
  requireIopl(c, "cli");
  c.flags &= ~Flag.IF;
}
export function sti(c: Cpu): void {
  requireIopl(c, "sti");
  if ((c.flags & Flag.IF) === 0) {
    c.flags |= Flag.IF;
    c.interruptShadow = true;
    c.slice = 0;
  }
}
export function nop(_c: Cpu): void {}

// ============================================================================ stack

/** 50-57 PUSH r. */
export function push_r(c: Cpu, i: Insn): void {
  c.push(i.size, c.getReg(i.size, i.opcode & 7));
}
export function push_r32(c: Cpu, i: Insn): void {
  c.push32(c.regs[i.opcode & 7]!);
}
/** 58-5F POP r. */
export function pop_r(c: Cpu, i: Insn): void {
  const v = c.pop(i.size);
  c.setReg(i.size, i.opcode & 7, v);
}
export function pop_r32(c: Cpu, i: Insn): void {
  const v = c.peek32(0);
  c.adjustSp(4);
  c.regs[i.opcode & 7] = v;
}
/** 68 PUSH iz, 6A PUSH ib. */
export function push_imm(c: Cpu, i: Insn): void {
  c.push(i.size, i.imm);
}
/** FF /6 PUSH Ev. */
export function push_rm(c: Cpu, i: Insn): void {
  c.push(i.size, readRm(c, i, i.size));
}
/** 8F /0 POP Ev: ESP is incremented before the address is computed (SDM "POP"). */
export function pop_rm(c: Cpu, i: Insn): void {
  const v = c.peek(i.size, 0);
  const sp = c.regs[Reg.ESP]!;
  c.adjustSp(i.size);
  try {
    writeRm(c, i, i.size, v);
  } catch (e) {
    c.regs[Reg.ESP] = sp;
    throw e;
  }
}
/** PUSH/POP segment registers: 06/07 ES, 0E CS, 16/17 SS, 1E/1F DS, 0F A0/A1 FS, 0F A8/A9 GS. */
const SEG_OF_OPCODE: Record<number, number> = {
  6: Seg.ES,
  7: Seg.ES,
  14: Seg.CS,
  22: Seg.SS,
  23: Seg.SS,
  30: Seg.DS,
  31: Seg.DS,
  4000: Seg.FS,
  4001: Seg.FS,
  4008: Seg.GS,
  4009: Seg.GS,
};
export function push_seg(c: Cpu, i: Insn): void {
  const s = SEG_OF_OPCODE[i.opcode]!;
  if (i.size === 4) {
    // A 32-bit push of a segment register writes 16 bits on recent processors; write 32 (zero-extended).
    c.push32(c.segSel[s]!);
  } else c.push16(c.segSel[s]!);
}
export function pop_seg(c: Cpu, i: Insn): void {
  const s = SEG_OF_OPCODE[i.opcode]!;
  const v = c.peek(i.size, 0);
  loadSegment(c, s, v & 0xffff);
  c.adjustSp(i.size);
  if (s === Seg.SS) {
    c.interruptShadow = true;
    c.slice = 0;
  }
}
/** 60 PUSHA/PUSHAD. */
export function pusha(c: Cpu, i: Insn): void {
  const s = i.size;
  const sp = c.regs[Reg.ESP]!;
  const vals = [0, 1, 2, 3, 4, 5, 6, 7].map((r) =>
    r === Reg.ESP ? (s === 4 ? sp : sp & 0xffff) : c.getReg(s, r),
  );
  try {
    for (const v of vals) c.push(s, v);
  } catch (e) {
    c.regs[Reg.ESP] = sp;
    throw e;
  }
}
/** 61 POPA/POPAD (the stored ESP is skipped). */
export function popa(c: Cpu, i: Insn): void {
  const s = i.size;
  const vals = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => c.peek(s, k * s));
  for (let k = 0; k < 8; k++) {
    const r = 7 - k;
    if (r !== Reg.ESP) c.setReg(s, r, vals[k]!);
  }
  c.adjustSp(8 * s);
}
/** 9C PUSHF: VM and RF are cleared in the image (SDM "PUSHF"). */
export function pushf(c: Cpu, i: Insn): void {
  if (c.cpl !== 0 && c.protectedMode) sensitiveNoTrap.set("pushf", (sensitiveNoTrap.get("pushf") ?? 0) + 1);
  const f = c.getEflags() & ~(Flag.VM | Flag.RF);
  c.push(i.size, f);
}
/** 9D POPF: IOPL changes only at CPL 0, IF only when CPL <= IOPL (silently ignored otherwise). */
export function popf(c: Cpu, i: Insn): void {
  const v = c.peek(i.size, 0);
  c.adjustSp(i.size);
  const mask = i.size === 4 ? 0x247fd5 : 0x7fd5;
  const was = c.flags & (Flag.IF | Flag.TF);
  setFlagsFromPop(c, v, mask);
  // Newly set IF or TF: end the slice so the run loop takes interrupts / starts single-stepping.
  if ((~was & c.flags & (Flag.IF | Flag.TF)) !== 0) c.slice = 0;
}
/** C8 ENTER imm16, imm8. */
export function enter(c: Cpu, i: Insn): void {
  const s = i.size;
  const level = i.imm2 & 31;
  const sp0 = c.regs[Reg.ESP]!;
  try {
    c.push(s, c.getReg(s, Reg.EBP));
    const frame = c.ss32 ? c.regs[Reg.ESP]! : c.regs16[Reg.ESP << 1]!;
    if (level > 0) {
      let bp = c.ss32 ? c.regs[Reg.EBP]! : c.regs16[Reg.EBP << 1]!;
      for (let k = 1; k < level; k++) {
        bp = c.ss32 ? (bp - s) | 0 : (bp - s) & 0xffff;
        c.push(s, c.read((c.segBase[Seg.SS]! + bp) | 0, s));
      }
      c.push(s, frame);
    }
    const newSp = (c.ss32 ? c.regs[Reg.ESP]! : c.regs16[Reg.ESP << 1]!) - i.imm;
    // Probe the lowest byte of the new frame so a stack fault happens now.
    if (i.imm > 0) c.checkWrite((c.segBase[Seg.SS]! + (c.ss32 ? newSp : newSp & 0xffff)) | 0, 1);
    c.setReg(s, Reg.EBP, frame);
    if (c.ss32) c.regs[Reg.ESP] = newSp;
    else c.regs16[Reg.ESP << 1] = newSp;
  } catch (e) {
    c.regs[Reg.ESP] = sp0;
    throw e;
  }
}
/** C9 LEAVE. */
export function leave(c: Cpu, i: Insn): void {
  const bp = c.ss32 ? c.regs[Reg.EBP]! : c.regs16[Reg.EBP << 1]!;
  const v = c.read((c.segBase[Seg.SS]! + bp) | 0, i.size);
  if (c.ss32) c.regs[Reg.ESP] = (bp + i.size) | 0;
  else c.regs16[Reg.ESP << 1] = bp + i.size;
  c.setReg(i.size, Reg.EBP, v);
}
