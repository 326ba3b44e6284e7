/**
 * Integer arithmetic, logic, shifts, bit operations and data movement (SDM vol. 2). Every handler
 * reads its memory operands (and checks writability for read-modify-write) before it changes a
 * register or a flag, so a fault leaves the architectural state as it was.
 */
import { type Cpu, Lazy } from "./cpu.js";
import { checkSegment, type Insn, lin, offset, readRm, writeRm } from "./insn.js";
import { Flag, Reg, Vec } from "./registers.js";

// ============================================================================ the ALU

/** ADD OR ADC SBB AND SUB XOR CMP (the order of the opcode's bits 3-5 and of group 1's /r). */
export function alu(c: Cpu, op: number, size: number, a: number, b: number): number {
  let r: number;
  switch (op) {
    case 0:
      r = (a + b) | 0;
      c.lop = Lazy.ADD;
      break;
    case 1:
      r = a | b;
      c.lop = Lazy.LOGIC;
      break;
    case 2:
      r = (a + b + c.getCF()) | 0;
      c.lop = Lazy.ADD;
      break;
    case 3:
      r = (a - b - c.getCF()) | 0;
      c.lop = Lazy.SUB;
      break;
    case 4:
      r = a & b;
      c.lop = Lazy.LOGIC;
      break;
    case 6:
      r = a ^ b;
      c.lop = Lazy.LOGIC;
      break;
    default: // 5 SUB, 7 CMP
      r = (a - b) | 0;
      c.lop = Lazy.SUB;
      break;
  }
  c.la = a;
  c.lb = b;
  c.lr = r;
  c.lsz = size << 3;
  return r;
}

/** ALU Eb,Gb / Ev,Gv (opcodes 00-39 with bit 1 clear). */
export function alu_rm_r(c: Cpu, i: Insn): void {
  const op = (i.opcode >> 3) & 7;
  const s = i.size;
  const b = c.getReg(s, i.reg);
  if (!i.isMem) {
    const r = alu(c, op, s, c.getReg(s, i.rm), b);
    if (op !== 7) c.setReg(s, i.rm, r);
    return;
  }
  const a = lin(c, i);
  if (op === 7) {
    alu(c, op, s, c.read(a, s), b);
    return;
  }
  c.checkWrite(a, s);
  c.write(a, s, alu(c, op, s, c.read(a, s), b));
}

/** 32-bit ALU Ev,Gv: the hottest form, kept separate so it stays small. */
export function alu_rm32_r32(c: Cpu, i: Insn): void {
  const op = (i.opcode >> 3) & 7;
  const b = c.regs[i.reg]!;
  if (!i.isMem) {
    const r = alu(c, op, 4, c.regs[i.rm]!, b);
    if (op !== 7) c.regs[i.rm] = r;
    return;
  }
  const a = lin(c, i);
  if (op === 7) {
    alu(c, op, 4, c.read32(a), b);
    return;
  }
  c.checkWrite(a, 4);
  c.write32(a, alu(c, op, 4, c.read32(a), b));
}

/** ALU Gb,Eb / Gv,Ev (bit 1 set). */
export function alu_r_rm(c: Cpu, i: Insn): void {
  const op = (i.opcode >> 3) & 7;
  const s = i.size;
  const b = readRm(c, i, s);
  const r = alu(c, op, s, c.getReg(s, i.reg), b);
  if (op !== 7) c.setReg(s, i.reg, r);
}

export function alu_r32_rm32(c: Cpu, i: Insn): void {
  const op = (i.opcode >> 3) & 7;
  const b = i.isMem ? c.read32(lin(c, i)) : c.regs[i.rm]!;
  const r = alu(c, op, 4, c.regs[i.reg]!, b);
  if (op !== 7) c.regs[i.reg] = r;
}

/** ALU AL,ib / eAX,iz. */
export function alu_acc_imm(c: Cpu, i: Insn): void {
  const op = (i.opcode >> 3) & 7;
  const s = i.size;
  const r = alu(c, op, s, c.getReg(s, Reg.EAX), i.imm);
  if (op !== 7) c.setReg(s, Reg.EAX, r);
}

/** Group 1: ALU Eb,ib / Ev,iz / Ev,ib (80, 81, 83); the operation is ModRM.reg. */
export function alu_rm_imm(c: Cpu, i: Insn): void {
  const op = i.reg;
  const s = i.size;
  if (!i.isMem) {
    const r = alu(c, op, s, c.getReg(s, i.rm), i.imm);
    if (op !== 7) c.setReg(s, i.rm, r);
    return;
  }
  const a = lin(c, i);
  if (op === 7) {
    alu(c, op, s, c.read(a, s), i.imm);
    return;
  }
  c.checkWrite(a, s);
  c.write(a, s, alu(c, op, s, c.read(a, s), i.imm));
}

/** Group 1 with a 32-bit operand (81, 83): the common `add esp, 8` / `cmp eax, 3` forms. */
export function alu_rm32_imm(c: Cpu, i: Insn): void {
  const op = i.reg;
  if (!i.isMem) {
    const r = alu(c, op, 4, c.regs[i.rm]!, i.imm);
    if (op !== 7) c.regs[i.rm] = r;
    return;
  }
  const a = lin(c, i);
  if (op === 7) {
    alu(c, op, 4, c.read32(a), i.imm);
    return;
  }
  c.checkWrite(a, 4);
  c.write32(a, alu(c, op, 4, c.read32(a), i.imm));
}

export function test_rm_r(c: Cpu, i: Insn): void {
  alu(c, 4, i.size, readRm(c, i, i.size), c.getReg(i.size, i.reg));
}
export function test_acc_imm(c: Cpu, i: Insn): void {
  alu(c, 4, i.size, c.getReg(i.size, Reg.EAX), i.imm);
}
export function test_rm_imm(c: Cpu, i: Insn): void {
  alu(c, 4, i.size, readRm(c, i, i.size), i.imm);
}

function incdec(c: Cpu, a: number, size: number, dec: boolean): number {
  const cf = c.getCF();
  c.flags = (c.flags & ~Flag.CF) | cf;
  const r = dec ? (a - 1) | 0 : (a + 1) | 0;
  c.lop = dec ? Lazy.DEC : Lazy.INC;
  c.la = a;
  c.lb = 1;
  c.lr = r;
  c.lsz = size << 3;
  return r;
}

/** INC/DEC r16/r32 (40-4F). */
export function incdec_r(c: Cpu, i: Insn): void {
  const r = i.opcode & 7;
  c.setReg(i.size, r, incdec(c, c.getReg(i.size, r), i.size, (i.opcode & 8) !== 0));
}

export function incdec_r32(c: Cpu, i: Insn): void {
  const r = i.opcode & 7;
  c.regs[r] = incdec(c, c.regs[r]!, 4, (i.opcode & 8) !== 0);
}

/** Group 4/5 /0 /1: INC/DEC Eb/Ev. */
export function incdec_rm(c: Cpu, i: Insn): void {
  const s = i.size;
  const dec = i.reg === 1;
  if (!i.isMem) {
    c.setReg(s, i.rm, incdec(c, c.getReg(s, i.rm), s, dec));
    return;
  }
  const a = lin(c, i);
  c.checkWrite(a, s);
  c.write(a, s, incdec(c, c.read(a, s), s, dec));
}

/** Group 3 /2 NOT, /3 NEG. */
export function not_rm(c: Cpu, i: Insn): void {
  if (i.isMem) {
    const a = lin(c, i);
    c.checkWrite(a, i.size);
    c.write(a, i.size, ~c.read(a, i.size));
  } else c.setReg(i.size, i.rm, ~c.getReg(i.size, i.rm));
}
export function neg_rm(c: Cpu, i: Insn): void {
  const s = i.size;
  if (i.isMem) {
    const a = lin(c, i);
    c.checkWrite(a, s);
    c.write(a, s, alu(c, 5, s, 0, c.read(a, s)));
  } else c.setReg(s, i.rm, alu(c, 5, s, 0, c.getReg(s, i.rm)));
}

// ============================================================================ multiply, divide

/** Unsigned 32x32 -> 64 multiply: sets `mulHi` and returns the low word. */
let mulHi = 0;
function mulu32(a: number, b: number): number {
  a >>>= 0;
  b >>>= 0;
  const aL = a & 0xffff;
  const aH = a >>> 16;
  const bL = b & 0xffff;
  const bH = b >>> 16;
  const ll = aL * bL;
  const lh = aL * bH;
  const hl = aH * bL;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  mulHi = (aH * bH + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) | 0;
  return ((mid & 0xffff) << 16) | (ll & 0xffff);
}
function muls32(a: number, b: number): number {
  const lo = mulu32(a, b);
  mulHi = (mulHi - (a < 0 ? b : 0) - (b < 0 ? a : 0)) | 0;
  return lo;
}

/** Group 3 /4 MUL: AX = AL*r/m8, DX:AX = AX*r/m16, EDX:EAX = EAX*r/m32. CF=OF=high half != 0. */
export function mul_rm(c: Cpu, i: Insn): void {
  const s = i.size;
  const b = readRm(c, i, s);
  let hi: number;
  let lo: number;
  if (s === 1) {
    const r = c.regs8[0]! * b;
    c.regs16[0] = r;
    hi = r >> 8;
    lo = r & 0xff;
  } else if (s === 2) {
    const r = c.regs16[0]! * b;
    c.regs16[0] = r;
    c.regs16[Reg.EDX << 1] = r >>> 16;
    hi = r >>> 16;
    lo = r & 0xffff;
  } else {
    lo = mulu32(c.regs[Reg.EAX]!, b);
    hi = mulHi;
    c.regs[Reg.EAX] = lo;
    c.regs[Reg.EDX] = hi;
  }
  const f = hi !== 0 ? 1 : 0;
  c.setFlagsOther(lo, s << 3, f, f);
}

/** Group 3 /5 IMUL (one operand). */
export function imul1_rm(c: Cpu, i: Insn): void {
  const s = i.size;
  const b = readRm(c, i, s);
  let f: number;
  let lo: number;
  if (s === 1) {
    const r = ((c.regs8[0]! << 24) >> 24) * ((b << 24) >> 24);
    c.regs16[0] = r;
    f = r !== (r << 24) >> 24 ? 1 : 0;
    lo = r;
  } else if (s === 2) {
    const r = ((c.regs16[0]! << 16) >> 16) * ((b << 16) >> 16);
    c.regs16[0] = r;
    c.regs16[Reg.EDX << 1] = r >> 16;
    f = r !== (r << 16) >> 16 ? 1 : 0;
    lo = r;
  } else {
    lo = muls32(c.regs[Reg.EAX]!, b | 0);
    c.regs[Reg.EAX] = lo;
    c.regs[Reg.EDX] = mulHi;
    f = mulHi !== lo >> 31 ? 1 : 0;
  }
  c.setFlagsOther(lo, s << 3, f, f);
}

function imulTrunc(c: Cpu, s: number, a: number, b: number): number {
  let r: number;
  let f: number;
  if (s === 2) {
    const p = ((a << 16) >> 16) * ((b << 16) >> 16);
    r = (p << 16) >> 16;
    f = r !== p ? 1 : 0;
  } else {
    r = muls32(a | 0, b | 0);
    f = mulHi !== r >> 31 ? 1 : 0;
  }
  c.setFlagsOther(r, s << 3, f, f);
  return r;
}
/**
 * 32-bit two- and three-operand IMUL: the low half by Math.imul; CF=OF=1 when the exact product
 * differs from it (a double product above 2^53 is inexact but then surely differs from an int32).
 */
export function imul_r32_rm32(c: Cpu, i: Insn): void {
  const a = c.regs[i.reg]!;
  const b = i.isMem ? c.read32(lin(c, i)) : c.regs[i.rm]!;
  const r = Math.imul(a, b);
  const f = a * b !== r ? 1 : 0;
  c.setFlagsOther(r, 32, f, f);
  c.regs[i.reg] = r;
}
export function imul_r32_rm32_imm(c: Cpu, i: Insn): void {
  const a = i.isMem ? c.read32(lin(c, i)) : c.regs[i.rm]!;
  const r = Math.imul(a, i.imm);
  const f = a * i.imm !== r ? 1 : 0;
  c.setFlagsOther(r, 32, f, f);
  c.regs[i.reg] = r;
}

/** 0F AF IMUL Gv,Ev. */
export function imul_r_rm(c: Cpu, i: Insn): void {
  c.setReg(i.size, i.reg, imulTrunc(c, i.size, c.getReg(i.size, i.reg), readRm(c, i, i.size)));
}
/** 69 / 6B IMUL Gv,Ev,imm. */
export function imul_r_rm_imm(c: Cpu, i: Insn): void {
  c.setReg(i.size, i.reg, imulTrunc(c, i.size, readRm(c, i, i.size), i.imm));
}

let divRem = 0;
/** Unsigned (hi:lo) / d for d < 2^32, hi < d: the quotient (fits 32 bits); remainder in divRem. */
function divu64(hi: number, lo: number, d: number): number {
  let rem = hi;
  rem = rem * 65536 + (lo >>> 16);
  const q1 = Math.floor(rem / d);
  rem -= q1 * d;
  rem = rem * 65536 + (lo & 0xffff);
  const q2 = Math.floor(rem / d);
  rem -= q2 * d;
  divRem = rem;
  return q1 * 65536 + q2;
}

/** Group 3 /6 DIV, /7 IDIV; #DE on a zero divisor or a quotient that does not fit. */
export function div_rm(c: Cpu, i: Insn): void {
  const s = i.size;
  const signed = i.reg === 7;
  const raw = readRm(c, i, s);
  if (s === 1) {
    const n = signed ? (c.regs16[0]! << 16) >> 16 : c.regs16[0]!;
    const d = signed ? (raw << 24) >> 24 : raw & 0xff;
    if (d === 0) c.fault(Vec.DE);
    const q = Math.trunc(n / d);
    if (signed ? q > 127 || q < -128 : q > 0xff) c.fault(Vec.DE);
    c.regs8[0] = q;
    c.regs8[1] = n % d;
    return;
  }
  if (s === 2) {
    const u = ((c.regs16[Reg.EDX << 1]! << 16) | c.regs16[0]!) >>> 0;
    const n = signed ? u | 0 : u;
    const d = signed ? (raw << 16) >> 16 : raw & 0xffff;
    if (d === 0) c.fault(Vec.DE);
    const q = Math.trunc(n / d);
    if (signed ? q > 0x7fff || q < -0x8000 : q > 0xffff) c.fault(Vec.DE);
    c.regs16[0] = q;
    c.regs16[Reg.EDX << 1] = n % d;
    return;
  }
  const hi = c.regs[Reg.EDX]!;
  const lo = c.regs[Reg.EAX]!;
  if (!signed) {
    const d = raw >>> 0;
    if (d === 0 || hi >>> 0 >= d) c.fault(Vec.DE);
    const q = divu64(hi >>> 0, lo >>> 0, d);
    c.regs[Reg.EAX] = q;
    c.regs[Reg.EDX] = divRem;
    return;
  }
  const dS = raw | 0;
  if (dS === 0) c.fault(Vec.DE);
  const negN = hi < 0;
  let uh = hi >>> 0;
  let ul = lo >>> 0;
  if (negN) {
    ul = (~ul + 1) >>> 0;
    uh = (~uh + (ul === 0 ? 1 : 0)) >>> 0;
  }
  const ud = Math.abs(dS);
  // Quotient of a 64-bit magnitude: high part first (uh / ud), then the rest.
  const qh = Math.floor(uh / ud);
  const ql = divu64(uh - qh * ud, ul, ud);
  const rem = divRem;
  if (qh !== 0) c.fault(Vec.DE);
  const neg = negN !== dS < 0;
  if (neg ? ql > 0x80000000 : ql > 0x7fffffff) c.fault(Vec.DE);
  c.regs[Reg.EAX] = neg ? -ql : ql;
  c.regs[Reg.EDX] = negN ? -rem : rem;
}

// ============================================================================ shifts, rotates

function shift(c: Cpu, op: number, size: number, a: number, count: number): number {
  const bits = size << 3;
  const mask = bits === 32 ? -1 : (1 << bits) - 1;
  a &= mask;
  let r: number;
  switch (op) {
    case 0: {
      // ROL: only CF and OF change.
      const n = count & (bits - 1);
      r = n === 0 ? a : ((a << n) | (a >>> (bits - n))) & mask;
      const cf = r & 1;
      c.materializeFlags();
      c.flags = (c.flags & ~(Flag.CF | Flag.OF)) | cf | ((((r >>> (bits - 1)) & 1) ^ cf) << 11);
      return r;
    }
    case 1: {
      const n = count & (bits - 1);
      r = n === 0 ? a : ((a >>> n) | (a << (bits - n))) & mask;
      const msb = (r >>> (bits - 1)) & 1;
      c.materializeFlags();
      c.flags = (c.flags & ~(Flag.CF | Flag.OF)) | msb | ((msb ^ ((r >>> (bits - 2)) & 1)) << 11);
      return r;
    }
    case 2:
    case 3: {
      // RCL / RCR through CF, count modulo bits+1.
      let n = count % (bits + 1);
      let cf = c.getCF();
      r = a;
      if (op === 2) {
        while (n-- > 0) {
          const out = (r >>> (bits - 1)) & 1;
          r = ((r << 1) | cf) & mask;
          cf = out;
        }
        c.materializeFlags();
        c.flags = (c.flags & ~(Flag.CF | Flag.OF)) | cf | ((((r >>> (bits - 1)) & 1) ^ cf) << 11);
      } else {
        const of = ((a >>> (bits - 1)) & 1) ^ cf;
        while (n-- > 0) {
          const out = r & 1;
          r = ((r >>> 1) | (cf << (bits - 1))) & mask;
          cf = out;
        }
        c.materializeFlags();
        c.flags = (c.flags & ~(Flag.CF | Flag.OF)) | cf | (of << 11);
      }
      return r;
    }
    case 4:
    case 6: {
      const cf = count > bits ? 0 : (a >>> (bits - count)) & 1;
      r = count >= 32 ? 0 : (a << count) & mask;
      c.setFlagsOther(r, bits, cf, ((r >>> (bits - 1)) & 1) ^ cf);
      return r;
    }
    case 5: {
      const cf = (a >>> (count - 1)) & 1;
      r = a >>> count;
      c.setFlagsOther(r, bits, cf, (a >>> (bits - 1)) & 1);
      return r;
    }
    default: {
      const sa = (a << (32 - bits)) >> (32 - bits);
      const cf = (sa >> (count - 1)) & 1;
      r = (sa >> count) & mask;
      c.setFlagsOther(r, bits, cf, 0);
      return r;
    }
  }
}

function shiftRm(c: Cpu, i: Insn, count: number): void {
  count &= 31;
  if (count === 0) {
    if (i.isMem) c.read(lin(c, i), i.size); // a zero count still reads (and may fault)
    return;
  }
  if (!i.isMem) {
    c.setReg(i.size, i.rm, shift(c, i.reg, i.size, c.getReg(i.size, i.rm), count));
    return;
  }
  const a = lin(c, i);
  c.checkWrite(a, i.size);
  c.write(a, i.size, shift(c, i.reg, i.size, c.read(a, i.size), count));
}
/** Group 2 C0/C1 (imm8), D0/D1 (1), D2/D3 (CL). */
export function shift_rm_imm(c: Cpu, i: Insn): void {
  shiftRm(c, i, i.imm);
}
/** C1 /4 /5 /7 with a register: SHL, SHR, SAR r32, imm8 without the generic path. */
export function shift_rm32_imm(c: Cpu, i: Insn): void {
  const count = i.imm & 31;
  const op = i.reg;
  if (i.isMem || count === 0 || op < 4) {
    shiftRm(c, i, i.imm);
    return;
  }
  const a = c.regs[i.rm]!;
  let r: number;
  if (op === 5) {
    r = a >>> count;
    c.setFlagsOther(r, 32, (a >>> (count - 1)) & 1, a >>> 31);
  } else if (op === 7) {
    r = a >> count;
    c.setFlagsOther(r, 32, (a >> (count - 1)) & 1, 0);
  } else {
    r = a << count;
    const cf = (a >>> (32 - count)) & 1;
    c.setFlagsOther(r, 32, cf, (r >>> 31) ^ cf);
  }
  c.regs[i.rm] = r;
}

export function shift_rm_1(c: Cpu, i: Insn): void {
  shiftRm(c, i, 1);
}
export function shift_rm_cl(c: Cpu, i: Insn): void {
  shiftRm(c, i, c.regs8[4]!);
}

/** SHLD / SHRD Ev,Gv,imm8|CL (0F A4/A5/AC/AD). */
export function shxd(c: Cpu, i: Insn): void {
  const count = ((i.opcode & 1) === 0 ? i.imm : c.regs8[4]!) & 31;
  const left = (i.opcode & 8) === 0;
  const s = i.size;
  const bits = s << 3;
  const a = i.isMem ? lin(c, i) : 0;
  if (i.isMem) c.checkWrite(a, s);
  const dst = i.isMem ? c.read(a, s) : c.getReg(s, i.rm);
  if (count === 0) return;
  const src = c.getReg(s, i.reg);
  let r: number;
  let cf: number;
  if (bits === 32) {
    if (left) {
      r = (dst << count) | (src >>> (32 - count));
      cf = (dst >>> (32 - count)) & 1;
    } else {
      r = (dst >>> count) | (src << (32 - count));
      cf = (dst >>> (count - 1)) & 1;
    }
  } else {
    if (left) {
      const t = ((dst & 0xffff) << 16) | (src & 0xffff);
      r = ((t << count) >>> 16) & 0xffff;
      cf = (dst >>> (16 - count)) & 1;
    } else {
      const t = ((src & 0xffff) << 16) | (dst & 0xffff);
      r = (t >>> count) & 0xffff;
      cf = (dst >>> (count - 1)) & 1;
    }
  }
  const of = (((r ^ dst) >>> (bits - 1)) & 1) as number;
  c.setFlagsOther(r, bits, cf, of);
  if (i.isMem) c.write(a, s, r);
  else c.setReg(s, i.rm, r);
}

// ============================================================================ bit operations

function setCF(c: Cpu, cf: number): void {
  c.materializeFlags();
  c.flags = (c.flags & ~Flag.CF) | cf;
}

/** BT/BTS/BTR/BTC Ev,Gv (0F A3/AB/B3/BB) and group 8 Ev,ib (0F BA /4-/7). */
function bitop(c: Cpu, i: Insn, op: number, bitOffset: number, fromReg: boolean): void {
  const s = i.size;
  const bits = s << 3;
  if (!i.isMem) {
    const bit = bitOffset & (bits - 1);
    const v = c.getReg(s, i.rm);
    const cf = (v >>> bit) & 1;
    if (op === 1) c.setReg(s, i.rm, v | (1 << bit));
    else if (op === 2) c.setReg(s, i.rm, v & ~(1 << bit));
    else if (op === 3) c.setReg(s, i.rm, v ^ (1 << bit));
    setCF(c, cf);
    return;
  }
  let a = lin(c, i);
  let bit: number;
  if (fromReg) {
    const off = s === 2 ? (bitOffset << 16) >> 16 : bitOffset | 0;
    a = (a + ((off >> 3) & ~(s - 1))) | 0;
    bit = off & (bits - 1);
  } else bit = bitOffset & (bits - 1);
  if (op !== 0) c.checkWrite(a, s);
  const v = c.read(a, s);
  const cf = (v >>> bit) & 1;
  if (op === 1) c.write(a, s, v | (1 << bit));
  else if (op === 2) c.write(a, s, v & ~(1 << bit));
  else if (op === 3) c.write(a, s, v ^ (1 << bit));
  setCF(c, cf);
}
/** 0F A3 BT, AB BTS, B3 BTR, BB BTC: the operation is opcode bits 3-4. */
export function bt_rm_r(c: Cpu, i: Insn): void {
  bitop(c, i, (i.opcode >> 3) & 3, c.getReg(i.size, i.reg), true);
}
export function bt_rm_imm(c: Cpu, i: Insn): void {
  bitop(c, i, i.reg & 3, i.imm & 0xff, false);
}

/** BSF / BSR (0F BC / BD): ZF=1 and destination unchanged when the source is zero. */
export function bsf_r_rm(c: Cpu, i: Insn): void {
  const v = readRm(c, i, i.size) & (i.size === 2 ? 0xffff : -1);
  c.materializeFlags();
  if (v === 0) {
    c.flags |= Flag.ZF;
    return;
  }
  c.flags &= ~Flag.ZF;
  c.setReg(i.size, i.reg, 31 - Math.clz32(v & -v));
}
export function bsr_r_rm(c: Cpu, i: Insn): void {
  const v = readRm(c, i, i.size) & (i.size === 2 ? 0xffff : -1);
  c.materializeFlags();
  if (v === 0) {
    c.flags |= Flag.ZF;
    return;
  }
  c.flags &= ~Flag.ZF;
  c.setReg(i.size, i.reg, 31 - Math.clz32(v));
}

/** BSWAP r32 (0F C8+r). */
export function bswap_r(c: Cpu, i: Insn): void {
  const r = i.opcode & 7;
  const v = c.regs[r]!;
  c.regs[r] = ((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
}

// ============================================================================ compare-exchange

/** CMPXCHG Eb,Gb / Ev,Gv (0F B0/B1). */
export function cmpxchg_rm_r(c: Cpu, i: Insn): void {
  const s = i.size;
  const a = i.isMem ? lin(c, i) : 0;
  if (i.isMem) c.checkWrite(a, s);
  const dst = i.isMem ? c.read(a, s) : c.getReg(s, i.rm);
  const acc = c.getReg(s, Reg.EAX);
  alu(c, 7, s, acc, dst);
  const mask = s === 4 ? -1 : (1 << (s << 3)) - 1;
  if (((acc ^ dst) & mask) === 0) {
    if (i.isMem) c.write(a, s, c.getReg(s, i.reg));
    else c.setReg(s, i.rm, c.getReg(s, i.reg));
  } else {
    if (i.isMem) c.write(a, s, dst); // the processor always writes back (SDM: CMPXCHG)
    c.setReg(s, Reg.EAX, dst);
  }
}

/** CMPXCHG8B m64 (0F C7 /1). */
export function cmpxchg8b(c: Cpu, i: Insn): void {
  const a = lin(c, i);
  c.checkWrite(a, 4);
  c.checkWrite((a + 4) | 0, 4);
  const lo = c.read32(a);
  const hi = c.read32((a + 4) | 0);
  c.materializeFlags();
  if (lo === c.regs[Reg.EAX] && hi === c.regs[Reg.EDX]) {
    c.write32(a, c.regs[Reg.EBX]!);
    c.write32((a + 4) | 0, c.regs[Reg.ECX]!);
    c.flags |= Flag.ZF;
  } else {
    c.write32(a, lo);
    c.write32((a + 4) | 0, hi);
    c.regs[Reg.EAX] = lo;
    c.regs[Reg.EDX] = hi;
    c.flags &= ~Flag.ZF;
  }
}

/** XADD Eb,Gb / Ev,Gv (0F C0/C1). */
export function xadd_rm_r(c: Cpu, i: Insn): void {
  const s = i.size;
  const src = c.getReg(s, i.reg);
  if (!i.isMem) {
    const dst = c.getReg(s, i.rm);
    const r = alu(c, 0, s, dst, src);
    c.setReg(s, i.reg, dst);
    c.setReg(s, i.rm, r);
    return;
  }
  const a = lin(c, i);
  c.checkWrite(a, s);
  const dst = c.read(a, s);
  const r = alu(c, 0, s, dst, src);
  c.write(a, s, r);
  c.setReg(s, i.reg, dst);
}

// ============================================================================ data movement

export function mov_rm_r(c: Cpu, i: Insn): void {
  writeRm(c, i, i.size, c.getReg(i.size, i.reg));
}
export function mov_rm32_r32(c: Cpu, i: Insn): void {
  if (i.isMem) c.write32(lin(c, i), c.regs[i.reg]!);
  else c.regs[i.rm] = c.regs[i.reg]!;
}
export function mov_r_rm(c: Cpu, i: Insn): void {
  c.setReg(i.size, i.reg, readRm(c, i, i.size));
}
export function mov_r32_rm32(c: Cpu, i: Insn): void {
  c.regs[i.reg] = i.isMem ? c.read32(lin(c, i)) : c.regs[i.rm]!;
}
export function mov_rm_imm(c: Cpu, i: Insn): void {
  writeRm(c, i, i.size, i.imm);
}
/** B0-B7 MOV r8,ib; B8-BF MOV r,iz. */
export function mov_r_imm(c: Cpu, i: Insn): void {
  c.setReg(i.size, i.opcode & 7, i.imm);
}
/** A0-A3 MOV AL/eAX, moffs and back. */
export function mov_acc_moffs(c: Cpu, i: Insn): void {
  const off = i.addr32 ? i.disp : i.disp & 0xffff;
  if (c.segLimit[i.seg] !== -1) checkSegment(c, i.seg, off, i.size);
  const a = (c.segBase[i.seg]! + off) | 0;
  if ((i.opcode & 2) === 0) c.setReg(i.size, Reg.EAX, c.read(a, i.size));
  else c.write(a, i.size, c.getReg(i.size, Reg.EAX));
}
export function lea(c: Cpu, i: Insn): void {
  if (!i.isMem) c.ud();
  c.setReg(i.size, i.reg, offset(c, i));
}
/** 0F B6/B7 MOVZX, 0F BE/BF MOVSX: source size from opcode bit 0. */
export function movx_r_rm(c: Cpu, i: Insn): void {
  const srcSize = (i.opcode & 1) === 0 ? 1 : 2;
  let v = readRm(c, i, srcSize);
  if ((i.opcode & 8) !== 0) v = srcSize === 1 ? (v << 24) >> 24 : (v << 16) >> 16;
  c.setReg(i.size, i.reg, v);
}
export function movzx_r32_rm8(c: Cpu, i: Insn): void {
  c.regs[i.reg] = i.isMem ? c.read8(lin(c, i)) : c.regs8[((i.rm & 3) << 2) | (i.rm >> 2)]!;
}
export function movzx_r32_rm16(c: Cpu, i: Insn): void {
  c.regs[i.reg] = i.isMem ? c.read16(lin(c, i)) : c.regs16[i.rm << 1]!;
}
export function movsx_r32_rm8(c: Cpu, i: Insn): void {
  const v = i.isMem ? c.read8(lin(c, i)) : c.regs8[((i.rm & 3) << 2) | (i.rm >> 2)]!;
  c.regs[i.reg] = (v << 24) >> 24;
}
export function movsx_r32_rm16(c: Cpu, i: Insn): void {
  const v = i.isMem ? c.read16(lin(c, i)) : c.regs16[i.rm << 1]!;
  c.regs[i.reg] = (v << 16) >> 16;
}

export function xchg_rm_r(c: Cpu, i: Insn): void {
  const s = i.size;
  const r = c.getReg(s, i.reg);
  if (!i.isMem) {
    c.setReg(s, i.reg, c.getReg(s, i.rm));
    c.setReg(s, i.rm, r);
    return;
  }
  const a = lin(c, i);
  c.checkWrite(a, s);
  const m = c.read(a, s);
  c.write(a, s, r);
  c.setReg(s, i.reg, m);
}
/** 91-97 XCHG eAX, r. */
export function xchg_acc_r(c: Cpu, i: Insn): void {
  const r = i.opcode & 7;
  const t = c.getReg(i.size, r);
  c.setReg(i.size, r, c.getReg(i.size, Reg.EAX));
  c.setReg(i.size, Reg.EAX, t);
}
/** 0F 40-4F CMOVcc Gv,Ev (the source is read, and may fault, even when the condition is false). */
export function cmov_r_rm(c: Cpu, i: Insn): void {
  const v = readRm(c, i, i.size);
  if (c.cond(i.opcode & 15)) c.setReg(i.size, i.reg, v);
}
/** 0F 90-9F SETcc Eb. */
export function setcc_rm(c: Cpu, i: Insn): void {
  writeRm(c, i, 1, c.cond(i.opcode & 15) ? 1 : 0);
}
/** 98 CBW / CWDE. */
export function cbw(c: Cpu, i: Insn): void {
  if (i.size === 4) c.regs[Reg.EAX] = (c.regs16[0]! << 16) >> 16;
  else c.regs16[0] = (c.regs8[0]! << 24) >> 24;
}
/** 99 CWD / CDQ. */
export function cwd(c: Cpu, i: Insn): void {
  if (i.size === 4) c.regs[Reg.EDX] = c.regs[Reg.EAX]! >> 31;
  else c.regs16[Reg.EDX << 1] = (c.regs16[0]! << 16) >> 31;
}
/** D7 XLAT: AL = [seg:eBX + AL]. */
export function xlat(c: Cpu, i: Insn): void {
  let off = c.regs[Reg.EBX]! + c.regs8[0]!;
  if (!i.addr32) off &= 0xffff;
  c.regs8[0] = c.read8((c.segBase[i.seg]! + off) | 0);
}
/** 9E SAHF / 9F LAHF. */
export function sahf(c: Cpu): void {
  const f = c.getEflags();
  c.setArithFlags((f & Flag.OF) | (c.regs8[1]! & (Flag.CF | Flag.PF | Flag.AF | Flag.ZF | Flag.SF)));
}
export function lahf(c: Cpu): void {
  c.regs8[1] = (c.getEflags() & 0xd5) | Flag.FIXED;
}
/** F5 CMC, F8 CLC, F9 STC. */
export function cmc(c: Cpu): void {
  setCF(c, c.getCF() ^ 1);
}
export function clc(c: Cpu): void {
  setCF(c, 0);
}
export function stc(c: Cpu): void {
  setCF(c, 1);
}
export function cld(c: Cpu): void {
  c.flags &= ~Flag.DF;
}
export function std(c: Cpu): void {
  c.flags |= Flag.DF;
}
/** D6 SALC (undocumented): AL = CF ? 0xff : 0. */
export function salc(c: Cpu): void {
  c.regs8[0] = c.getCF() ? 0xff : 0;
}

// ============================================================================ BCD (rare, kept simple)

export function daa(c: Cpu): void {
  let al = c.regs8[0]!;
  const oldAl = al;
  const oldCf = c.getCF();
  let cf = 0;
  let af = 0;
  if ((al & 0xf) > 9 || c.getAF()) {
    al = (al + 6) & 0xff;
    af = 1;
    cf = oldCf | (oldAl + 6 > 0xff ? 1 : 0);
  }
  if (oldAl > 0x99 || oldCf) {
    al = (al + 0x60) & 0xff;
    cf = 1;
  }
  c.regs8[0] = al;
  c.setFlagsOther(al, 8, cf, 0);
  c.flags |= af << 4;
}
export function das(c: Cpu): void {
  let al = c.regs8[0]!;
  const oldAl = al;
  const oldCf = c.getCF();
  let cf = 0;
  let af = 0;
  if ((al & 0xf) > 9 || c.getAF()) {
    al = (al - 6) & 0xff;
    af = 1;
    cf = oldCf | (oldAl < 6 ? 1 : 0);
  }
  if (oldAl > 0x99 || oldCf) {
    al = (al - 0x60) & 0xff;
    cf = 1;
  }
  c.regs8[0] = al;
  c.setFlagsOther(al, 8, cf, 0);
  c.flags |= af << 4;
}
export function aaa(c: Cpu, i: Insn): void {
  const sub = i.opcode === 0x3f;
  let f = 0;
  if ((c.regs8[0]! & 0xf) > 9 || c.getAF()) {
    c.regs16[0] = (c.regs16[0]! + (sub ? -6 : 6) + (sub ? -0x100 : 0x100)) & 0xffff;
    f = 1;
  }
  c.regs8[0] = c.regs8[0]! & 0xf;
  c.setFlagsOther(c.regs8[0]!, 8, f, 0);
  c.flags |= f << 4;
}
/** D4 AAM ib, D5 AAD ib. */
export function aam(c: Cpu, i: Insn): void {
  const base = i.imm & 0xff;
  if (base === 0) c.fault(Vec.DE);
  const al = c.regs8[0]!;
  c.regs8[1] = Math.floor(al / base);
  c.regs8[0] = al % base;
  c.setFlagsOther(c.regs8[0]!, 8, 0, 0);
}
export function aad(c: Cpu, i: Insn): void {
  const v = (c.regs8[0]! + c.regs8[1]! * (i.imm & 0xff)) & 0xff;
  c.regs16[0] = v;
  c.setFlagsOther(v, 8, 0, 0);
}
