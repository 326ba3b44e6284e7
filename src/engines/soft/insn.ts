/**
 * A decoded instruction: the compact record the decoder produces once per physical address and
 * the interpreter and the binary translator (bt/) consume. Decoding and execution are separate:
 * nothing here executes.
 */
import type { Cpu } from "./cpu.js";

export type Handler = (c: Cpu, i: Insn) => void;

export class Insn {
  /** Executes the instruction (chosen by the decoder from the opcode table). */
  handler: Handler;
  /**
   * Index of the handler in the interpreter's direct-dispatch switch (HOT_HANDLERS in
   * soft_cpu.ts), or 0 to call `handler` indirectly.
   */
  hot = 0;
  /** Mnemonic from the opcode table, for traces and reports. */
  name = "";
  /** Length in bytes; the run loop advances EIP by it before calling the handler. */
  len = 0;
  /** Opcode: one-byte 0x00-0xff, two-byte 0x0f00-0x0fff. */
  opcode = 0;
  modrm = 0;
  /** ModRM.reg (register operand or group extension). */
  reg = 0;
  /** ModRM.rm when the operand is a register. */
  rm = 0;
  isMem = false;
  /** Effective address: base register (-1 none) + (index register (-1 none) << scale) + disp. */
  base = -1;
  index = -1;
  scale = 0;
  disp = 0;
  /** Segment of the memory operand (default or override), a Seg index. */
  seg = 3;
  /** Whether a segment override prefix was present (string instructions use it for DS:ESI). */
  segOverride = false;
  /** Operand size in bytes (1, 2 or 4). */
  size = 4;
  addr32 = true;
  imm = 0;
  imm2 = 0;
  /** 0 = none, 1 = REP/REPE (F3), 2 = REPNE (F2). */
  rep = 0;
  /** CS.D at decode time: the record is valid only for the same code-segment size. */
  cs32 = true;
  /** Ends a basic block (branches, mode changes): for a translator. */
  blockEnd = false;
  /** The record of the next instruction in the same page, once known (interpreter chaining). */
  next: Insn | undefined = undefined;
  /** The record at the last taken branch target in the same page, and its EIP. */
  jump: Insn | undefined = undefined;
  jumpEip = 0;
  /**
   * Technique bt (bt/translator.ts): the compiled block that starts at this instruction, the
   * mode it was compiled for (bt/block_cache.ts `modeKey`) and its instruction count; `btHits`
   * counts entries while it is cold (-1: never compiled, it cannot be).
   */
  btFn: (() => void) | undefined = undefined;
  btMode = 0;
  btCount = 0;
  btHits = 0;

  constructor(handler: Handler) {
    this.handler = handler;
  }
}

/**
 * Linear address of the memory operand (SDM vol. 1 ch. 3.7.5). Flat segments (limit 4 GiB, the
 * common case) skip the checks; others check the offset against the limit, and a null data
 * selector faults (#GP(0), or #SS(0) for the stack segment; SDM vol. 3 ch. 5.3, 5.4).
 */
export function lin(c: Cpu, i: Insn): number {
  let a = i.disp;
  if (i.base >= 0) a += c.regs[i.base]!;
  if (i.index >= 0) a += c.regs[i.index]! << i.scale;
  if (!i.addr32) a &= 0xffff;
  const s = i.seg;
  if (c.segLimit[s] !== -1) checkSegment(c, s, a, accessSize(i));
  return (c.segBase[s]! + a) | 0;
}

/** Bytes the operand covers, for the limit check (MOVZX/MOVSX read less than the operand size). */
function accessSize(i: Insn): number {
  const op = i.opcode;
  if (op === 0x0fb6 || op === 0x0fbe) return 1;
  if (op === 0x0fb7 || op === 0x0fbf) return 2;
  return i.size;
}

/**
 * Segment checks of an access of `size` bytes at `offset` through segment `s` when the segment is
 * not flat (SDM vol. 3 ch. 5.3): a null selector or an offset beyond the limit raises #GP(0)
 * (#SS(0) for SS); expand-down data segments accept only offsets above the limit.
 */
export function checkSegment(c: Cpu, s: number, offset: number, size: number): void {
  const vector = s === 2 ? 12 : 13;
  if (c.protectedMode) {
    const attr = c.segAttr[s]!;
    if ((attr & 0x80) === 0) c.fault(vector, 0);
    // Expand-down data segments: valid offsets are above the limit.
    if ((attr & 0x1c) === 0x14) {
      const upper = (attr & 0x4000) !== 0 ? 0xffffffff : 0xffff;
      if (offset >>> 0 <= c.segLimit[s]! >>> 0 || (offset >>> 0) + size - 1 > upper) c.fault(vector, 0);
      return;
    }
  }
  if ((offset >>> 0) + size - 1 > c.segLimit[s]! >>> 0) c.fault(vector, 0);
}

/** Offset (effective address without segment base), for LEA. */
export function offset(c: Cpu, i: Insn): number {
  let a = i.disp;
  if (i.base >= 0) a += c.regs[i.base]!;
  if (i.index >= 0) a += c.regs[i.index]! << i.scale;
  return i.addr32 ? a | 0 : a & 0xffff;
}

/** Reads the r/m operand of size `i.size` (or `size`). */
export function readRm(c: Cpu, i: Insn, size: number): number {
  if (!i.isMem) return c.getReg(size, i.rm);
  return c.read(lin(c, i), size);
}

export function writeRm(c: Cpu, i: Insn, size: number, v: number): void {
  if (!i.isMem) c.setReg(size, i.rm, v);
  else c.write(lin(c, i), size, v);
}
