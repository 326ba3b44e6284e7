/**
 * x86 instruction decoder (SDM vol. 2 ch. 2): prefixes, opcode, ModRM/SIB, displacement and
 * immediates into an `Insn` record, driven by the declarative table in `opcode_table.ts`.
 * It knows nothing of execution, so a binary translator can reuse it.
 */
import { CPU_UNIMPLEMENTED, type Cpu } from "./cpu.js";
import { type Handler, Insn } from "./insn.js";
import { Form, ONE_BYTE, type OpEntry, TWO_BYTE } from "./opcode_table.js";
import { Reg, Seg } from "./registers.js";

/** 16-bit ModRM r/m encodings (SDM vol. 2 table 2-1): base, index. */
const RM16_BASE = [Reg.EBX, Reg.EBX, Reg.EBP, Reg.EBP, Reg.ESI, Reg.EDI, Reg.EBP, Reg.EBX];
const RM16_INDEX = [Reg.ESI, Reg.EDI, Reg.ESI, Reg.EDI, -1, -1, -1, -1];

const unimplemented: Handler = () => {
  throw CPU_UNIMPLEMENTED;
};

/**
 * Decodes the instruction at linear address `start` (CS base included) in the current mode.
 * Memory faults (#PF on the fetch) propagate; an opcode missing from the table decodes to a
 * handler that stops the CPU with an "unimplemented" report.
 */
export function decode(c: Cpu, start: number): Insn {
  const i = new Insn(unimplemented);
  let p = start;
  let size = c.cs32 ? 4 : 2;
  let addr32 = c.cs32;
  let seg = -1;
  let rep = 0;
  let lock = false;
  let b: number;
  for (;;) {
    b = c.read8(p);
    p = (p + 1) | 0;
    if (b === 0x66) size = size === 4 ? 2 : 4;
    else if (b === 0x67) addr32 = !addr32;
    else if (b === 0xf3) rep = 1;
    else if (b === 0xf2) rep = 2;
    else if (b === 0xf0) lock = true;
    else if (b === 0x26) seg = Seg.ES;
    else if (b === 0x2e) seg = Seg.CS;
    else if (b === 0x36) seg = Seg.SS;
    else if (b === 0x3e) seg = Seg.DS;
    else if (b === 0x64) seg = Seg.FS;
    else if (b === 0x65) seg = Seg.GS;
    else break;
    if (((p - start) | 0) > 14) c.gp(0);
  }
  let entry: OpEntry | undefined;
  let opcode = b;
  if (b === 0x0f) {
    b = c.read8(p);
    p = (p + 1) | 0;
    opcode = 0x0f00 | b;
    entry = TWO_BYTE[b];
  } else entry = ONE_BYTE[b];
  i.opcode = opcode;
  i.size = size;
  i.addr32 = addr32;
  i.rep = rep;
  i.cs32 = c.cs32;
  i.seg = seg >= 0 ? seg : Seg.DS;
  i.segOverride = seg >= 0;
  if (entry === undefined) {
    i.len = (p - start) | 0;
    return i;
  }
  if (entry.modrm) {
    const m = c.read8(p);
    p = (p + 1) | 0;
    i.modrm = m;
    const mod = m >> 6;
    i.reg = (m >> 3) & 7;
    const rm = m & 7;
    if (mod === 3) {
      i.isMem = false;
      i.rm = rm;
    } else {
      i.isMem = true;
      let defaultSeg = Seg.DS;
      if (addr32) {
        if (rm === 4) {
          const sib = c.read8(p);
          p = (p + 1) | 0;
          i.scale = sib >> 6;
          const idx = (sib >> 3) & 7;
          i.index = idx === 4 ? -1 : idx;
          const base = sib & 7;
          if (base === 5 && mod === 0) {
            i.base = -1;
            i.disp = readImm(c, p, 4);
            p = (p + 4) | 0;
          } else {
            i.base = base;
            if (base === Reg.ESP || base === Reg.EBP) defaultSeg = Seg.SS;
          }
        } else if (rm === 5 && mod === 0) {
          i.disp = readImm(c, p, 4);
          p = (p + 4) | 0;
        } else {
          i.base = rm;
          if (rm === Reg.EBP) defaultSeg = Seg.SS;
        }
        if (mod === 1) {
          i.disp = (c.read8(p) << 24) >> 24;
          p = (p + 1) | 0;
        } else if (mod === 2) {
          i.disp = readImm(c, p, 4);
          p = (p + 4) | 0;
        }
      } else {
        if (rm === 6 && mod === 0) {
          i.disp = readImm(c, p, 2);
          p = (p + 2) | 0;
        } else {
          i.base = RM16_BASE[rm]!;
          i.index = RM16_INDEX[rm]!;
          if (i.base === Reg.EBP) defaultSeg = Seg.SS;
        }
        if (mod === 1) {
          i.disp = (c.read8(p) << 24) >> 24;
          p = (p + 1) | 0;
        } else if (mod === 2) {
          i.disp = (readImm(c, p, 2) << 16) >> 16;
          p = (p + 2) | 0;
        }
      }
      if (seg < 0) i.seg = defaultSeg;
    }
    if (entry.group !== undefined) {
      const sub = entry.group[i.reg];
      if (sub === undefined || (sub.memOnly && !i.isMem) || (sub.regOnly && i.isMem)) {
        i.len = (p - start) | 0;
        return i;
      }
      entry = sub;
    }
  }
  const osize = entry.byte ? 1 : size;
  i.size = osize;
  switch (entry.form) {
    case Form.IB:
    case Form.E_IB:
    case Form.JB:
      i.imm = (c.read8(p) << 24) >> 24;
      p = (p + 1) | 0;
      break;
    case Form.IW:
      i.imm = readImm(c, p, 2);
      p = (p + 2) | 0;
      break;
    case Form.IZ:
    case Form.E_IZ:
    case Form.JZ: {
      const n = osize === 1 ? 1 : osize;
      i.imm = readImm(c, p, n);
      if (n === 1) i.imm = (i.imm << 24) >> 24;
      else if (n === 2 && entry.form === Form.JZ) i.imm = (i.imm << 16) >> 16;
      p = (p + n) | 0;
      break;
    }
    case Form.IW_IB:
      i.imm = readImm(c, p, 2);
      i.imm2 = c.read8((p + 2) | 0);
      p = (p + 3) | 0;
      break;
    case Form.AP: {
      const n = size;
      i.imm = readImm(c, p, n);
      i.imm2 = readImm(c, (p + n) | 0, 2);
      p = (p + n + 2) | 0;
      break;
    }
    case Form.MOFFS: {
      const n = addr32 ? 4 : 2;
      i.disp = readImm(c, p, n);
      i.isMem = true;
      p = (p + n) | 0;
      break;
    }
    default:
      break;
  }
  i.len = (p - start) | 0;
  if (i.len > 15) c.gp(0);
  i.handler = entry.h32 !== undefined && osize === 4 ? entry.h32 : entry.h!;
  // LOCK is valid only on a read-modify-write of memory (SDM vol. 2 "LOCK"); #UD otherwise.
  if (lock && !(i.isMem && lockable(opcode, i.reg))) i.handler = lockUd;
  i.name = entry.name;
  i.blockEnd = entry.blockEnd === true;
  return i;
}

const lockUd: Handler = (c) => c.ud();

/** Opcodes (and group extensions) that accept a LOCK prefix with a memory destination. */
function lockable(op: number, reg: number): boolean {
  if (op < 0x40) return (op & 7) < 2 && (op & 0x38) !== 0x38;
  switch (op) {
    case 0x80:
    case 0x81:
    case 0x83:
      return reg !== 7;
    case 0x86:
    case 0x87:
    case 0x0fab:
    case 0x0fb3:
    case 0x0fbb:
    case 0x0fb0:
    case 0x0fb1:
    case 0x0fc0:
    case 0x0fc1:
      return true;
    case 0xf6:
    case 0xf7:
      return reg === 2 || reg === 3;
    case 0xfe:
    case 0xff:
      return reg === 0 || reg === 1;
    case 0x0fba:
      return reg >= 5;
    case 0x0fc7:
      return reg === 1;
    default:
      return false;
  }
}

/** Little-endian immediate of `n` bytes at linear `p` (unsigned for n < 4, int32 for n = 4). */
function readImm(c: Cpu, p: number, n: number): number {
  if (n === 1) return c.read8(p);
  if (n === 2) return c.read8(p) | (c.read8((p + 1) | 0) << 8);
  return (
    c.read8(p) | (c.read8((p + 1) | 0) << 8) | (c.read8((p + 2) | 0) << 16) | (c.read8((p + 3) | 0) << 24)
  );
}
