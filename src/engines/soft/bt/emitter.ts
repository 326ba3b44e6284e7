/**
 * Compiles one block (block_builder.ts) into one named JavaScript function (`new Function`), so a
 * profile names the guest address. Inside the function:
 *  - general registers live in locals `r0..r7`, loaded at entry and written back before every
 *    interpreter-handler call (reloaded after it), at every exit and when a fault unwinds;
 *  - lazy flags live in locals `fa fb fr` while their kind and size are known at translation time;
 *    they reach `c.lop/la/lb/lr/lsz` only where something can read them (flag_liveness.ts);
 *    CMP/SUB/TEST/AND + Jcc become one JavaScript comparison;
 *  - memory goes through the soft TLB's fast path inline (RAM, permission bits, alignment, and the
 *    code-page bit for writes), and through `c.read*`/`c.write*` otherwise;
 *  - every instruction without a specialised form is a direct call of its interpreter handler with
 *    its decoded record, exactly as the interpreter calls it (`c.eip` = next, `c.startEip`), so the
 *    semantics are never forked; sensitive ones are counted as VMM calls (vmm_calls.ts).
 * Faults are precise: the catch writes the locals back, counts the completed instructions, sets
 * `c.startEip` to the faulting instruction and rethrows for the run loop to deliver.
 */
import type { Cpu } from "../cpu.js";
import { checkSegment, type Handler, type Insn } from "../insn.js";
import * as A from "../insn_alu.js";
import * as C from "../insn_control.js";
import type { BlockCode } from "./block_builder.js";
import { type FlagUse, flagsLiveAfter } from "./flag_liveness.js";
import { vmmCallKind } from "./vmm_calls.js";

export type BlockFn = () => void;

/** Lazy-flag kinds (cpu.ts `Lazy`). */
const ADD = 1;
const SUB = 2;
const LOGIC = 3;
const INC = 4;
const DEC = 5;

/** What the emitter knows about the lazy flags at a point of the block. */
interface Pending {
  lop: number;
  lsz: number;
  /** fr = fa - fb exactly (SUB/CMP, not SBB): Jcc can compare the operands. */
  exact: boolean;
  /** Already written to the Cpu (the locals still hold the same values). */
  synced: boolean;
}

/** How an instruction is emitted: inline (with its flag use) or through its handler. */
interface Plan {
  use: FlagUse;
  inline: boolean;
}

export interface VmmCounters {
  index(kind: string): number;
  counts: Float64Array;
}

export interface Emitted {
  fn: BlockFn;
  source: string;
}

const FLAGS_NONE: FlagUse = { reads: false, writesAll: false, mayFault: false };

function aluKind(op: number): { lop: number; exact: boolean } {
  if (op === 0 || op === 2) return { lop: ADD, exact: false };
  if (op === 1 || op === 4 || op === 6) return { lop: LOGIC, exact: false };
  return { lop: SUB, exact: op !== 3 };
}

/** Which instructions are specialised, and their flag behaviour. */
function plan(i: Insn, ss32: boolean): Plan {
  const h = i.handler;
  const mem = i.isMem;
  const handler: Plan = { use: { reads: true, writesAll: false, mayFault: true }, inline: false };
  const op = i.opcode;
  if (i.size === 4) {
    if (h === A.alu_rm32_r32 || h === A.alu_r32_rm32 || h === A.alu_rm32_imm || h === A.alu_rm_imm) {
      const aop = h === A.alu_rm32_imm || h === A.alu_rm_imm ? i.reg : (op >> 3) & 7;
      return {
        use: { reads: aop === 2 || aop === 3, writesAll: aop !== 2 && aop !== 3, mayFault: mem },
        inline: true,
      };
    }
    if (h === A.alu_acc_imm) {
      const aop = (op >> 3) & 7;
      return {
        use: { reads: aop === 2 || aop === 3, writesAll: aop !== 2 && aop !== 3, mayFault: false },
        inline: true,
      };
    }
    if (h === A.test_rm_r || h === A.test_acc_imm || h === A.test_rm_imm)
      return { use: { reads: false, writesAll: true, mayFault: mem }, inline: true };
    if (h === A.mov_rm32_r32 || h === A.mov_r32_rm32 || h === A.mov_rm_imm || h === A.mov_r_imm)
      return { use: { ...FLAGS_NONE, mayFault: mem }, inline: true };
    if (h === A.movzx_r32_rm8 || h === A.movzx_r32_rm16 || h === A.movsx_r32_rm8 || h === A.movsx_r32_rm16)
      return { use: { ...FLAGS_NONE, mayFault: mem }, inline: true };
    if (h === A.lea && mem) return { use: FLAGS_NONE, inline: true };
    if (h === A.incdec_r32) return { use: { reads: true, writesAll: false, mayFault: false }, inline: true };
    if (ss32 && (h === C.push_r32 || h === C.pop_r32 || h === C.push_imm))
      return { use: { ...FLAGS_NONE, mayFault: true }, inline: true };
    if (ss32 && h === C.call_rel) return { use: { ...FLAGS_NONE, mayFault: true }, inline: true };
    if (ss32 && h === C.ret) return { use: { ...FLAGS_NONE, mayFault: true }, inline: true };
    if (h === C.jmp_rel) return { use: FLAGS_NONE, inline: true };
  }
  if (h === C.jcc) return { use: { reads: true, writesAll: false, mayFault: false }, inline: true };
  if (h === C.nop && op === 0x90 && i.rep === 0) return { use: FLAGS_NONE, inline: true };
  return handler;
}

/**
 * Emits the block's function. `name` names it (guest address); `mode` selects the TLB bits the
 * inline fast path checks (`rcheck`/`wcheck` of the block's CPL) and the stack size.
 */
export function emitBlock(
  cpu: Cpu,
  code: BlockCode,
  name: string,
  rcheck: number,
  wcheck: number,
  ss32: boolean,
  vmm: VmmCounters,
): Emitted {
  const { insns, eips } = code;
  const n = insns.length;
  const plans = insns.map((i) => plan(i, ss32));
  const live = flagsLiveAfter(plans.map((p) => p.use));
  const used = new Set<number>();
  const assigned = new Set<number>();
  let dirty = new Set<number>();
  let pend: Pending | undefined; // undefined: the flags are in the Cpu
  const out: string[] = [];
  /** Pending unsynced flag state before each instruction, for the catch: lop | lsz << 8. */
  const flagTable: number[] = [];
  const emit = (s: string) => out.push(s);
  const reg = (r: number) => {
    used.add(r);
    return `r${r}`;
  };
  const setReg = (r: number, v: string) => {
    used.add(r);
    assigned.add(r);
    dirty.add(r);
    emit(`r${r} = ${v};`);
  };
  const writeBack = (all: boolean) => {
    const s: string[] = [];
    for (const r of all ? assigned : dirty) s.push(`R[${r}] = r${r};`);
    return s.join(" ");
  };
  const syncFlags = (): string => {
    if (pend === undefined || pend.synced) return "";
    const ab = pend.lop === LOGIC ? "" : " c.la = fa; c.lb = fb;";
    return `c.lop = ${pend.lop}; c.lsz = ${pend.lsz}; c.lr = fr;${ab}`;
  };
  /** An exit after `done` instructions; `eip` undefined keeps c.eip (set by a handler). */
  const exit = (done: number, eip: string | undefined): string =>
    `{ ${writeBack(false)} ${syncFlags()} ${eip === undefined ? "" : `c.eip = ${eip};`} c.instructions = n0 + ${done}; c.slice -= ${done}; return; }`;

  /** Linear address of i's memory operand into `a` (segment checks as insn.ts `lin`). */
  const linear = (i: Insn, size: number) => {
    const parts: string[] = [String(i.disp)];
    if (i.base >= 0) parts.push(reg(i.base));
    if (i.index >= 0) parts.push(i.scale === 0 ? reg(i.index) : `(${reg(i.index)} << ${i.scale})`);
    const off = i.addr32 ? `(${parts.join(" + ")}) | 0` : `(${parts.join(" + ")}) & 0xffff`;
    emit(`a = ${off}; if (SL[${i.seg}] !== -1) seg(c, ${i.seg}, a, ${size}); a = (SB[${i.seg}] + a) | 0;`);
  };
  const slow = (k: number) => `c.instructions = n0 + ${k};`;
  /** v = read of `size` at a. */
  const read = (k: number, size: number) => {
    if (size === 4)
      emit(
        `e = T[a >>> 12]; if ((e & ${rcheck}) === ${rcheck} && (a & 3) === 0) v = M32[((e & -4096) | (a & 4095)) >>> 2]; else { ${slow(k)} v = c.read32(a); }`,
      );
    else if (size === 2)
      emit(
        `e = T[a >>> 12]; if ((e & ${rcheck}) === ${rcheck} && (a & 1) === 0) v = M16[((e & -4096) | (a & 4095)) >>> 1]; else { ${slow(k)} v = c.read16(a); }`,
      );
    else
      emit(
        `e = T[a >>> 12]; if ((e & ${rcheck}) === ${rcheck}) v = M8[(e & -4096) | (a & 4095)]; else { ${slow(k)} v = c.read8(a); }`,
      );
  };
  let wrote = false;
  /** 32-bit write of `val` at a. */
  const write32 = (k: number, val: string) => {
    wrote = true;
    emit(
      `e = T[a >>> 12]; p = (e & -4096) | (a & 4095); if ((e & ${wcheck}) === ${wcheck} && (a & 3) === 0 && CP[p >>> 12] === 0) M32[p >>> 2] = ${val}; else { ${slow(k)} c.write32(a, ${val}); }`,
    );
  };
  /** Read-modify-write: w = fast; v = old value; later `finishRmw` writes `x`. */
  const startRmw = (k: number) => {
    wrote = true;
    emit(
      `e = T[a >>> 12]; p = (e & -4096) | (a & 4095); w = (e & ${wcheck}) === ${wcheck} && (a & 3) === 0 && CP[p >>> 12] === 0; if (w) v = M32[p >>> 2]; else { ${slow(k)} c.checkWrite(a, 4); v = c.read32(a); }`,
    );
  };
  const finishRmw = (val: string) => emit(`if (w) M32[p >>> 2] = ${val}; else c.write32(a, ${val});`);
  const setFlags = (k: number, lop: number, exact: boolean, x: string, y: string, r: string) => {
    pend = { lop, lsz: 32, exact, synced: false };
    if (!live[k]) return;
    emit(lop === LOGIC ? `fr = ${r};` : `fa = ${x}; fb = ${y}; fr = ${r};`);
  };
  const cfExpr = (): string => {
    if (pend === undefined || pend.synced) return "c.getCF()";
    const t = pend.lsz - 1;
    if (pend.lop === ADD) return `((((fa & fb) | ((fa | fb) & ~fr)) >>> ${t}) & 1)`;
    if (pend.lop === SUB) return `((((~fa & fb) | ((~fa | fb) & fr)) >>> ${t}) & 1)`;
    if (pend.lop === LOGIC) return "0";
    return "(c.flags & 1)";
  };
  /** Jcc condition `cc` as a JS expression (fused with the pending compare when possible). */
  const condExpr = (cc: number): string => {
    const neg = (cc & 1) !== 0;
    const p = pend;
    let e: string | undefined;
    if (p !== undefined && p.lsz === 32 && p.lop === SUB && p.exact) {
      switch (cc >> 1) {
        case 1:
          e = "(fa >>> 0) < (fb >>> 0)";
          break;
        case 2:
          e = "fa === fb";
          break;
        case 3:
          e = "(fa >>> 0) <= (fb >>> 0)";
          break;
        case 4:
          e = "fr < 0";
          break;
        case 6:
          e = "fa < fb";
          break;
        case 7:
          e = "fa <= fb";
          break;
      }
    } else if (p !== undefined && p.lsz === 32 && p.lop === LOGIC) {
      switch (cc >> 1) {
        case 0:
        case 1:
          e = "false";
          break;
        case 2:
          e = "fr === 0";
          break;
        case 3:
          e = "fr === 0";
          break;
        case 4:
        case 6:
          e = "fr < 0";
          break;
        case 7:
          e = "fr <= 0";
          break;
      }
    }
    if (e === undefined) return `c.cond(${cc})`;
    return neg ? `!(${e})` : `(${e})`;
  };

  const handlers: Handler[] = [];
  const records: Insn[] = [];
  let ended = false;
  for (let k = 0; k < n && !ended; k++) {
    const i = insns[k]!;
    const pl = plans[k]!;
    const eip = eips[k]!;
    const next = eips[k + 1]!;
    const last = k === n - 1;
    flagTable.push(pend !== undefined && !pend.synced ? pend.lop | (pend.lsz << 8) : 0);
    wrote = false;
    emit(`// ${(eip >>> 0).toString(16)} ${i.name}`);
    if (!pl.inline) {
      // The interpreter's handler, called as the interpreter calls it.
      const wb = writeBack(false);
      const fl = syncFlags();
      flagTable[k] = 0;
      dirty = new Set();
      if (pend !== undefined) pend.synced = true;
      const kind = vmmCallKind(i);
      const count = kind === undefined ? "" : `VC[${vmm.index(kind)}]++; `;
      handlers[k] = i.handler;
      records[k] = i;
      emit(
        `${wb} ${fl} k = ${k + 1000}; c.startEip = ${eip}; c.eip = ${next}; c.instructions = n0 + ${k}; ${count}H[${k}](c, I[${k}]);`,
      );
      emit("/*RELOAD*/");
      pend = undefined;
      if (last) emit(exit(k + 1, undefined));
      else emit(`if (c.slice === 0 || c.fetchLinPage === -1) ${exit(k + 1, undefined)}`);
      continue;
    }
    if (pl.use.mayFault) emit(`k = ${k};`);
    // Group 1 with a 32-bit operand is the 32-bit immediate form.
    const h = i.handler === A.alu_rm_imm ? A.alu_rm32_imm : i.handler;
    const op = i.opcode;
    if (h === A.alu_rm32_r32 || h === A.alu_r32_rm32 || h === A.alu_rm32_imm || h === A.alu_acc_imm) {
      const aop = h === A.alu_rm32_imm ? i.reg : (op >> 3) & 7;
      const cf = aop === 2 || aop === 3 ? cfExpr() : "0";
      const f = (x: string, y: string) =>
        [
          `(${x} + ${y}) | 0`,
          `${x} | ${y}`,
          `(${x} + ${y} + ${cf}) | 0`,
          `(${x} - ${y} - ${cf}) | 0`,
          `${x} & ${y}`,
          `(${x} - ${y}) | 0`,
          `${x} ^ ${y}`,
          `(${x} - ${y}) | 0`,
        ][aop]!;
      const kind = aluKind(aop);
      const writes = aop !== 7;
      if (
        h === A.alu_acc_imm ||
        (!i.isMem && (h === A.alu_rm32_imm || h === A.alu_rm32_r32 || h === A.alu_r32_rm32))
      ) {
        let dst: number;
        let y: string;
        if (h === A.alu_acc_imm) {
          dst = 0;
          y = String(i.imm);
        } else if (h === A.alu_rm32_imm) {
          dst = i.rm;
          y = String(i.imm);
        } else if (h === A.alu_rm32_r32) {
          dst = i.rm;
          y = reg(i.reg);
        } else {
          dst = i.reg;
          y = reg(i.rm);
        }
        emit(`x = ${reg(dst)}; y = ${y}; t = ${f("x", "y")};`);
        setFlags(k, kind.lop, kind.exact, "x", "y", "t");
        if (writes) setReg(dst, "t");
      } else if (h === A.alu_r32_rm32) {
        linear(i, 4);
        read(k, 4);
        emit(`x = ${reg(i.reg)}; t = ${f("x", "v")};`);
        setFlags(k, kind.lop, kind.exact, "x", "v", "t");
        if (writes) setReg(i.reg, "t");
      } else {
        // memory destination
        const y = h === A.alu_rm32_imm ? String(i.imm) : reg(i.reg);
        linear(i, 4);
        if (!writes) {
          read(k, 4);
          emit(`y = ${y}; t = ${f("v", "y")};`);
          setFlags(k, kind.lop, kind.exact, "v", "y", "t");
        } else {
          startRmw(k);
          emit(`y = ${y}; t = ${f("v", "y")};`);
          setFlags(k, kind.lop, kind.exact, "v", "y", "t");
          finishRmw("t");
        }
      }
    } else if (h === A.test_rm_r || h === A.test_acc_imm || h === A.test_rm_imm) {
      const y = h === A.test_rm_r ? reg(i.reg) : String(i.imm);
      if (h === A.test_acc_imm) emit(`x = ${reg(0)};`);
      else if (i.isMem) {
        linear(i, 4);
        read(k, 4);
        emit("x = v;");
      } else emit(`x = ${reg(i.rm)};`);
      setFlags(k, LOGIC, false, "x", y, `x & ${y}`);
    } else if (h === A.mov_rm32_r32 || (h === A.mov_rm_imm && i.size === 4)) {
      const val = h === A.mov_rm_imm ? String(i.imm) : reg(i.reg);
      if (i.isMem) {
        linear(i, 4);
        write32(k, val);
      } else setReg(i.rm, val);
    } else if (h === A.mov_r32_rm32) {
      if (i.isMem) {
        linear(i, 4);
        read(k, 4);
        setReg(i.reg, "v");
      } else setReg(i.reg, reg(i.rm));
    } else if (h === A.mov_r_imm) {
      setReg(op & 7, String(i.imm));
    } else if (h === A.movzx_r32_rm8 || h === A.movsx_r32_rm8) {
      const sx = h === A.movsx_r32_rm8;
      if (i.isMem) {
        linear(i, 1);
        read(k, 1);
      } else emit(`v = ${i.rm < 4 ? `${reg(i.rm)} & 0xff` : `(${reg(i.rm - 4)} >> 8) & 0xff`};`);
      setReg(i.reg, sx ? "(v << 24) >> 24" : "v");
    } else if (h === A.movzx_r32_rm16 || h === A.movsx_r32_rm16) {
      const sx = h === A.movsx_r32_rm16;
      if (i.isMem) {
        linear(i, 2);
        read(k, 2);
      } else emit(`v = ${reg(i.rm)} & 0xffff;`);
      setReg(i.reg, sx ? "(v << 16) >> 16" : "v");
    } else if (h === A.lea) {
      const parts: string[] = [String(i.disp)];
      if (i.base >= 0) parts.push(reg(i.base));
      if (i.index >= 0) parts.push(i.scale === 0 ? reg(i.index) : `(${reg(i.index)} << ${i.scale})`);
      setReg(i.reg, i.addr32 ? `(${parts.join(" + ")}) | 0` : `(${parts.join(" + ")}) & 0xffff`);
    } else if (h === A.incdec_r32) {
      const r = op & 7;
      const dec = (op & 8) !== 0;
      if (live[k]) emit(`c.flags = (c.flags & -2) | ${cfExpr()};`);
      emit(`x = ${reg(r)}; t = (x ${dec ? "-" : "+"} 1) | 0;`);
      pend = { lop: dec ? DEC : INC, lsz: 32, exact: false, synced: false };
      if (live[k]) emit("fa = x; fb = 1; fr = t;");
      setReg(r, "t");
    } else if (h === C.push_r32 || h === C.push_imm) {
      const val = h === C.push_imm ? String(i.imm) : reg(op & 7);
      emit(`y = ${val}; s = (${reg(4)} - 4) | 0; a = (SB[2] + s) | 0;`);
      write32(k, "y");
      setReg(4, "s");
    } else if (h === C.pop_r32) {
      emit(`a = (SB[2] + ${reg(4)}) | 0;`);
      read(k, 4);
      setReg(4, `(${reg(4)} + 4) | 0`);
      setReg(op & 7, "v");
    } else if (h === C.call_rel) {
      const target = (next + i.imm) | 0;
      emit(`s = (${reg(4)} - 4) | 0; a = (SB[2] + s) | 0;`);
      write32(k, String(next));
      setReg(4, "s");
      emit(exit(k + 1, String(target)));
      ended = true;
    } else if (h === C.ret) {
      emit(`a = (SB[2] + ${reg(4)}) | 0;`);
      read(k, 4);
      setReg(4, `(${reg(4)} + ${4 + (op === 0xc2 ? i.imm : 0)}) | 0`);
      emit(exit(k + 1, "v"));
      ended = true;
    } else if (h === C.jmp_rel) {
      const target = i.size === 4 ? (next + i.imm) | 0 : (next + i.imm) & 0xffff;
      emit(exit(k + 1, String(target)));
      ended = true;
    } else if (h === C.jcc) {
      const target = i.size === 4 ? (next + i.imm) | 0 : (next + i.imm) & 0xffff;
      let cond = condExpr(op & 15);
      if (cond.startsWith("c.cond")) {
        emit(syncFlags());
        if (pend !== undefined) pend.synced = true;
        cond = condExpr(op & 15);
      }
      emit(`if (${cond}) ${exit(k + 1, String(target))}`);
      emit(exit(k + 1, String(next)));
      ended = true;
    } else if (h === C.nop) {
      // nothing
    } else {
      throw new Error(`translator: no emitter for planned inline ${i.name}`);
    }
    if (!ended && wrote && !last) emit(`if (c.fetchLinPage === -1) ${exit(k + 1, String(next))}`);
    if (!ended && last) emit(exit(k + 1, String(next)));
  }
  const regs = [...used].sort();
  const load = regs.length === 0 ? "" : `let ${regs.map((r) => `r${r} = R[${r}]`).join(", ")};`;
  const reload = regs.map((r) => `r${r} = R[${r}];`).join(" ");
  const saveAll = [...assigned].map((r) => `R[${r}] = r${r};`).join(" ");
  const body = out.map((l) => (l === "/*RELOAD*/" ? reload : l)).join("\n");
  const fnName = `blk_${name}`;
  const source = `return function ${fnName}() {
const n0 = c.instructions;
${load}
let a = 0, e = 0, p = 0, v = 0, w = false, x = 0, y = 0, t = 0, s = 0, fa = 0, fb = 0, fr = 0, k = 0;
try {
${body}
} catch (err) {
  let j = k;
  if (j >= 1000) j -= 1000; else { ${saveAll} }
  const f = FL[j];
  if (f !== 0) { c.lop = f & 255; c.lsz = f >> 8; c.la = fa; c.lb = fb; c.lr = fr; }
  c.instructions = n0 + j; c.slice -= j; c.startEip = EIPS[j]; c.eip = EIPS[j];
  throw err;
}
};`;
  const factory = new Function(
    "c",
    "R",
    "T",
    "M8",
    "M16",
    "M32",
    "CP",
    "SB",
    "SL",
    "seg",
    "H",
    "I",
    "EIPS",
    "FL",
    "VC",
    source,
  ) as (...args: unknown[]) => BlockFn;
  const fn = factory(
    cpu,
    cpu.regs,
    cpu.tlb,
    cpu.mem8,
    cpu.mem16,
    cpu.mem32,
    cpu.codePage,
    cpu.segBase,
    cpu.segLimit,
    checkSegment,
    handlers,
    records,
    Int32Array.from(eips),
    Int32Array.from(flagTable),
    vmm.counts,
  );
  return { fn, source };
}
