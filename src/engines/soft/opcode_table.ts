/**
 * The declarative x86 opcode table (after v86's gen/x86_table.js): for each opcode, its mnemonic,
 * whether it has a ModRM byte, its immediate form, byte or full operand size, the handler (a small
 * named function, so a profile names the instruction), group extensions by ModRM.reg, and whether
 * it ends a basic block. The decoder (`decoder.ts`) is the only reader.
 */
import type { Handler } from "./insn.js";
import * as A from "./insn_alu.js";
import * as C from "./insn_control.js";
import * as S from "./insn_string.js";
import * as Y from "./insn_system.js";
import { vmcallOr } from "./paravirt.js";

/** Immediate / operand forms (SDM vol. 2 appendix A.2 operand codes). */
export const enum Form {
  /** No immediate. */
  NONE = 0,
  /** imm8 (sign-extended into `imm`). */
  IB = 1,
  /** imm16. */
  IW = 2,
  /** imm16/32 by operand size (imm8 for byte operations). */
  IZ = 3,
  /** imm16 then imm8 (ENTER). */
  IW_IB = 4,
  /** Far pointer: offset16/32 then selector16. */
  AP = 5,
  /** Address-size offset (MOV AL, moffs). */
  MOFFS = 6,
  /** rel8. */
  JB = 7,
  /** rel16/32. */
  JZ = 8,
  /** ModRM then imm8 (sign-extended). */
  E_IB = 9,
  /** ModRM then imm16/32 (imm8 for byte operations). */
  E_IZ = 10,
}

export interface OpEntry {
  name: string;
  form: Form;
  modrm: boolean;
  /** Byte-sized operation (operand size 1). */
  byte?: boolean;
  h?: Handler;
  /** Specialized handler for a 32-bit operand size. */
  h32?: Handler;
  /** Extensions by ModRM.reg (the entry's own form is ignored then). */
  group?: (OpEntry | undefined)[];
  memOnly?: boolean;
  regOnly?: boolean;
  blockEnd?: boolean;
}

export const ONE_BYTE: (OpEntry | undefined)[] = new Array(256).fill(undefined);
export const TWO_BYTE: (OpEntry | undefined)[] = new Array(256).fill(undefined);

type Opts = Partial<Omit<OpEntry, "name" | "form" | "h">>;

function op(name: string, form: Form, h: Handler, opts: Opts = {}): OpEntry {
  return { name, form, h, modrm: false, ...opts };
}
/** An instruction with a ModRM byte. */
function rm(name: string, form: Form, h: Handler, opts: Opts = {}): OpEntry {
  return { name, form, h, ...opts, modrm: true };
}
function group(name: string, entries: (OpEntry | undefined)[], opts: Opts = {}): OpEntry {
  return { name, form: Form.NONE, modrm: true, group: entries, ...opts };
}
function one(code: number, e: OpEntry): void {
  ONE_BYTE[code] = e;
}
function two(code: number, e: OpEntry): void {
  TWO_BYTE[code] = e;
}

const B = { byte: true };
const END = { blockEnd: true };
const ALU = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"];
const CC = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"];
const SHIFTS = ["rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar"];

// ---- 00-3F: the eight ALU operations in their six forms, segment push/pop, BCD adjusts
for (let k = 0; k < 8; k++) {
  const base = k << 3;
  const n = ALU[k]!;
  one(base + 0, rm(`${n} Eb,Gb`, Form.NONE, A.alu_rm_r, B));
  one(base + 1, rm(`${n} Ev,Gv`, Form.NONE, A.alu_rm_r, { h32: A.alu_rm32_r32 }));
  one(base + 2, rm(`${n} Gb,Eb`, Form.NONE, A.alu_r_rm, B));
  one(base + 3, rm(`${n} Gv,Ev`, Form.NONE, A.alu_r_rm, { h32: A.alu_r32_rm32 }));
  one(base + 4, op(`${n} AL,Ib`, Form.IB, A.alu_acc_imm, B));
  one(base + 5, op(`${n} eAX,Iz`, Form.IZ, A.alu_acc_imm));
}
one(0x06, op("push es", Form.NONE, C.push_seg));
one(0x07, op("pop es", Form.NONE, C.pop_seg));
one(0x0e, op("push cs", Form.NONE, C.push_seg));
one(0x16, op("push ss", Form.NONE, C.push_seg));
one(0x17, op("pop ss", Form.NONE, C.pop_seg));
one(0x1e, op("push ds", Form.NONE, C.push_seg));
one(0x1f, op("pop ds", Form.NONE, C.pop_seg));
one(0x27, op("daa", Form.NONE, A.daa));
one(0x2f, op("das", Form.NONE, A.das));
one(0x37, op("aaa", Form.NONE, A.aaa));
one(0x3f, op("aas", Form.NONE, A.aaa));

// ---- 40-6F
for (let r = 0; r < 8; r++) {
  one(0x40 + r, op("inc r", Form.NONE, A.incdec_r, { h32: A.incdec_r32 }));
  one(0x48 + r, op("dec r", Form.NONE, A.incdec_r, { h32: A.incdec_r32 }));
  one(0x50 + r, op("push r", Form.NONE, C.push_r, { h32: C.push_r32 }));
  one(0x58 + r, op("pop r", Form.NONE, C.pop_r, { h32: C.pop_r32 }));
}
one(0x60, op("pusha", Form.NONE, C.pusha));
one(0x61, op("popa", Form.NONE, C.popa));
one(0x62, rm("bound Gv,Ma", Form.NONE, C.bound));
one(0x68, op("push Iz", Form.IZ, C.push_imm));
one(0x69, rm("imul Gv,Ev,Iz", Form.E_IZ, A.imul_r_rm_imm, { h32: A.imul_r32_rm32_imm }));
one(0x6a, op("push Ib", Form.IB, C.push_imm));
one(0x6b, rm("imul Gv,Ev,Ib", Form.E_IB, A.imul_r_rm_imm, { h32: A.imul_r32_rm32_imm }));
one(0x6c, op("insb", Form.NONE, S.ins, B));
one(0x6d, op("ins", Form.NONE, S.ins));
one(0x6e, op("outsb", Form.NONE, S.outs, B));
one(0x6f, op("outs", Form.NONE, S.outs));

// ---- 70-7F Jcc rel8
for (let cc = 0; cc < 16; cc++) one(0x70 + cc, op(`j${CC[cc]} Jb`, Form.JB, C.jcc, END));

// ---- 80-8F
const grp1 = (byte: boolean, form: Form) => ALU.map((n) => rm(`${n} E,I`, form, A.alu_rm_imm, byte ? B : {}));
one(0x80, group("grp1 Eb,Ib", grp1(true, Form.E_IB)));
one(0x81, group("grp1 Ev,Iz", grp1(false, Form.E_IZ)));
one(0x82, group("grp1 Eb,Ib", grp1(true, Form.E_IB)));
one(0x83, group("grp1 Ev,Ib", grp1(false, Form.E_IB)));
one(0x84, rm("test Eb,Gb", Form.NONE, A.test_rm_r, B));
one(0x85, rm("test Ev,Gv", Form.NONE, A.test_rm_r));
one(0x86, rm("xchg Eb,Gb", Form.NONE, A.xchg_rm_r, B));
one(0x87, rm("xchg Ev,Gv", Form.NONE, A.xchg_rm_r));
one(0x88, rm("mov Eb,Gb", Form.NONE, A.mov_rm_r, B));
one(0x89, rm("mov Ev,Gv", Form.NONE, A.mov_rm_r, { h32: A.mov_rm32_r32 }));
one(0x8a, rm("mov Gb,Eb", Form.NONE, A.mov_r_rm, B));
one(0x8b, rm("mov Gv,Ev", Form.NONE, A.mov_r_rm, { h32: A.mov_r32_rm32 }));
one(0x8c, rm("mov Ev,Sw", Form.NONE, Y.mov_rm_sreg));
one(0x8d, rm("lea Gv,M", Form.NONE, A.lea));
one(0x8e, rm("mov Sw,Ew", Form.NONE, Y.mov_sreg_rm, END));
one(0x8f, group("grp1a", [rm("pop Ev", Form.NONE, C.pop_rm)]));

// ---- 90-9F
one(0x90, op("nop", Form.NONE, C.nop));
for (let r = 1; r < 8; r++) one(0x90 + r, op("xchg eAX,r", Form.NONE, A.xchg_acc_r));
one(0x98, op("cbw", Form.NONE, A.cbw));
one(0x99, op("cwd", Form.NONE, A.cwd));
one(0x9a, op("call Ap", Form.AP, C.call_far, END));
one(0x9b, op("fwait", Form.NONE, Y.fwait));
one(0x9c, op("pushf", Form.NONE, C.pushf));
one(0x9d, op("popf", Form.NONE, C.popf, END));
one(0x9e, op("sahf", Form.NONE, A.sahf));
one(0x9f, op("lahf", Form.NONE, A.lahf));

// ---- A0-AF
one(0xa0, op("mov AL,Ob", Form.MOFFS, A.mov_acc_moffs, B));
one(0xa1, op("mov eAX,Ov", Form.MOFFS, A.mov_acc_moffs));
one(0xa2, op("mov Ob,AL", Form.MOFFS, A.mov_acc_moffs, B));
one(0xa3, op("mov Ov,eAX", Form.MOFFS, A.mov_acc_moffs));
one(0xa4, op("movsb", Form.NONE, S.movs, B));
one(0xa5, op("movs", Form.NONE, S.movs));
one(0xa6, op("cmpsb", Form.NONE, S.cmps, B));
one(0xa7, op("cmps", Form.NONE, S.cmps));
one(0xa8, op("test AL,Ib", Form.IB, A.test_acc_imm, B));
one(0xa9, op("test eAX,Iz", Form.IZ, A.test_acc_imm));
one(0xaa, op("stosb", Form.NONE, S.stos, B));
one(0xab, op("stos", Form.NONE, S.stos));
one(0xac, op("lodsb", Form.NONE, S.lods, B));
one(0xad, op("lods", Form.NONE, S.lods));
one(0xae, op("scasb", Form.NONE, S.scas, B));
one(0xaf, op("scas", Form.NONE, S.scas));

// ---- B0-BF
for (let r = 0; r < 8; r++) {
  one(0xb0 + r, op("mov r8,Ib", Form.IB, A.mov_r_imm, B));
  one(0xb8 + r, op("mov r,Iz", Form.IZ, A.mov_r_imm));
}

// ---- C0-CF
const grp2 = (byte: boolean, form: Form, h: typeof A.shift_rm_1, h32?: typeof A.shift_rm_1) =>
  SHIFTS.map((n) => rm(n, form, h, byte ? B : h32 !== undefined ? { h32 } : {}));
one(0xc0, group("grp2 Eb,Ib", grp2(true, Form.E_IB, A.shift_rm_imm)));
one(0xc1, group("grp2 Ev,Ib", grp2(false, Form.E_IB, A.shift_rm_imm, A.shift_rm32_imm)));
one(0xc2, op("ret Iw", Form.IW, C.ret, END));
one(0xc3, op("ret", Form.NONE, C.ret, END));
one(0xc4, rm("les Gv,Mp", Form.NONE, Y.lxs));
one(0xc5, rm("lds Gv,Mp", Form.NONE, Y.lxs));
one(0xc6, group("grp11 Eb,Ib", [rm("mov Eb,Ib", Form.E_IB, A.mov_rm_imm, B)]));
one(0xc7, group("grp11 Ev,Iz", [rm("mov Ev,Iz", Form.E_IZ, A.mov_rm_imm)]));
one(0xc8, op("enter Iw,Ib", Form.IW_IB, C.enter));
one(0xc9, op("leave", Form.NONE, C.leave));
one(0xca, op("retf Iw", Form.IW, C.retf, END));
one(0xcb, op("retf", Form.NONE, C.retf, END));
one(0xcc, op("int3", Form.NONE, C.int3, END));
one(0xcd, op("int Ib", Form.IB, C.int_imm, END));
one(0xce, op("into", Form.NONE, C.into, END));
one(0xcf, op("iret", Form.NONE, C.iret_, END));

// ---- D0-DF
one(0xd0, group("grp2 Eb,1", grp2(true, Form.NONE, A.shift_rm_1)));
one(0xd1, group("grp2 Ev,1", grp2(false, Form.NONE, A.shift_rm_1)));
one(0xd2, group("grp2 Eb,CL", grp2(true, Form.NONE, A.shift_rm_cl)));
one(0xd3, group("grp2 Ev,CL", grp2(false, Form.NONE, A.shift_rm_cl)));
one(0xd4, op("aam Ib", Form.IB, A.aam));
one(0xd5, op("aad Ib", Form.IB, A.aad));
one(0xd6, op("salc", Form.NONE, A.salc));
one(0xd7, op("xlat", Form.NONE, A.xlat));
for (let k = 0; k < 8; k++) one(0xd8 + k, rm(`fpu esc ${(0xd8 + k).toString(16)}`, Form.NONE, Y.fpu_escape));

// ---- E0-EF
one(0xe0, op("loopne Jb", Form.JB, C.loop, END));
one(0xe1, op("loope Jb", Form.JB, C.loop, END));
one(0xe2, op("loop Jb", Form.JB, C.loop, END));
one(0xe3, op("jcxz Jb", Form.JB, C.loop, END));
one(0xe4, op("in AL,Ib", Form.IB, Y.in_, B));
one(0xe5, op("in eAX,Ib", Form.IB, Y.in_));
one(0xe6, op("out Ib,AL", Form.IB, Y.out_, B));
one(0xe7, op("out Ib,eAX", Form.IB, Y.out_));
one(0xe8, op("call Jz", Form.JZ, C.call_rel, END));
one(0xe9, op("jmp Jz", Form.JZ, C.jmp_rel, END));
one(0xea, op("jmp Ap", Form.AP, C.jmp_far, END));
one(0xeb, op("jmp Jb", Form.JB, C.jmp_rel, END));
one(0xec, op("in AL,DX", Form.NONE, Y.in_, B));
one(0xed, op("in eAX,DX", Form.NONE, Y.in_));
one(0xee, op("out DX,AL", Form.NONE, Y.out_, B));
one(0xef, op("out DX,eAX", Form.NONE, Y.out_));

// ---- F0-FF
one(0xf4, op("hlt", Form.NONE, C.hlt, END));
one(0xf5, op("cmc", Form.NONE, A.cmc));
const grp3 = (byte: boolean) => {
  const o = byte ? B : {};
  return [
    rm("test E,I", Form.E_IZ, A.test_rm_imm, o),
    rm("test E,I", Form.E_IZ, A.test_rm_imm, o),
    rm("not E", Form.NONE, A.not_rm, o),
    rm("neg E", Form.NONE, A.neg_rm, o),
    rm("mul E", Form.NONE, A.mul_rm, o),
    rm("imul E", Form.NONE, A.imul1_rm, o),
    rm("div E", Form.NONE, A.div_rm, o),
    rm("idiv E", Form.NONE, A.div_rm, o),
  ];
};
one(0xf6, group("grp3 Eb", grp3(true)));
one(0xf7, group("grp3 Ev", grp3(false)));
one(0xf8, op("clc", Form.NONE, A.clc));
one(0xf9, op("stc", Form.NONE, A.stc));
one(0xfa, op("cli", Form.NONE, C.cli));
one(0xfb, op("sti", Form.NONE, C.sti, END));
one(0xfc, op("cld", Form.NONE, A.cld));
one(0xfd, op("std", Form.NONE, A.std));
one(
  0xfe,
  group("grp4 Eb", [rm("inc Eb", Form.NONE, A.incdec_rm, B), rm("dec Eb", Form.NONE, A.incdec_rm, B)]),
);
one(
  0xff,
  group("grp5 Ev", [
    rm("inc Ev", Form.NONE, A.incdec_rm),
    rm("dec Ev", Form.NONE, A.incdec_rm),
    rm("call Ev", Form.NONE, C.call_rm, END),
    rm("call Mp", Form.NONE, C.callf_rm, { memOnly: true, blockEnd: true }),
    rm("jmp Ev", Form.NONE, C.jmp_rm, END),
    rm("jmp Mp", Form.NONE, C.jmpf_rm, { memOnly: true, blockEnd: true }),
    rm("push Ev", Form.NONE, C.push_rm),
  ]),
);

// ---- two-byte opcodes 0F xx
two(
  0x00,
  group("grp6", [
    rm("sldt Ew", Form.NONE, Y.sldt_str),
    rm("str Ew", Form.NONE, Y.sldt_str),
    rm("lldt Ew", Form.NONE, Y.lldt),
    rm("ltr Ew", Form.NONE, Y.ltr),
    rm("verr Ew", Form.NONE, Y.verrw),
    rm("verw Ew", Form.NONE, Y.verrw),
  ]),
);
two(
  0x01,
  group("grp7", [
    rm("sgdt Ms | vmcall", Form.NONE, vmcallOr(Y.sgdt_sidt)),
    rm("sidt Ms", Form.NONE, Y.sgdt_sidt, { memOnly: true }),
    rm("lgdt Ms", Form.NONE, Y.lgdt_lidt, { memOnly: true }),
    rm("lidt Ms | vmmcall", Form.NONE, vmcallOr(Y.lgdt_lidt)),
    rm("smsw Ew", Form.NONE, Y.smsw),
    undefined,
    rm("lmsw Ew", Form.NONE, Y.lmsw, END),
    rm("invlpg M", Form.NONE, Y.invlpg, { memOnly: true }),
  ]),
);
two(0x02, rm("lar Gv,Ew", Form.NONE, Y.lar_lsl));
two(0x03, rm("lsl Gv,Ew", Form.NONE, Y.lar_lsl));
two(0x06, op("clts", Form.NONE, Y.clts));
two(0x08, op("invd", Form.NONE, Y.invd));
two(0x09, op("wbinvd", Form.NONE, Y.invd));
two(0x0b, op("ud2", Form.NONE, Y.ud2, END));
two(0x0d, rm("prefetch M", Form.NONE, Y.nop_rm));
for (let k = 0x18; k <= 0x1f; k++) two(k, rm("nop Ev", Form.NONE, Y.nop_rm));
two(0x20, rm("mov Rd,Cd", Form.NONE, Y.mov_r_cr, { h32: Y.mov_r_cr }));
two(0x21, rm("mov Rd,Dd", Form.NONE, Y.mov_r_dr));
two(0x22, rm("mov Cd,Rd", Form.NONE, Y.mov_cr_r, END));
two(0x23, rm("mov Dd,Rd", Form.NONE, Y.mov_dr_r));
two(0x30, op("wrmsr", Form.NONE, Y.wrmsr));
two(0x31, op("rdtsc", Form.NONE, Y.rdtsc));
two(0x32, op("rdmsr", Form.NONE, Y.rdmsr));
two(0x34, op("sysenter", Form.NONE, Y.sysenter, END));
two(0x35, op("sysexit", Form.NONE, Y.sysexit, END));
for (let cc = 0; cc < 16; cc++) {
  two(0x40 + cc, rm(`cmov${CC[cc]} Gv,Ev`, Form.NONE, A.cmov_r_rm));
  two(0x80 + cc, op(`j${CC[cc]} Jz`, Form.JZ, C.jcc, END));
  two(0x90 + cc, rm(`set${CC[cc]} Eb`, Form.NONE, A.setcc_rm, B));
}
two(0xa0, op("push fs", Form.NONE, C.push_seg));
two(0xa1, op("pop fs", Form.NONE, C.pop_seg));
two(0xa2, op("cpuid", Form.NONE, Y.cpuid));
two(0xa3, rm("bt Ev,Gv", Form.NONE, A.bt_rm_r));
two(0xa4, rm("shld Ev,Gv,Ib", Form.E_IB, A.shxd));
two(0xa5, rm("shld Ev,Gv,CL", Form.NONE, A.shxd));
two(0xa8, op("push gs", Form.NONE, C.push_seg));
two(0xa9, op("pop gs", Form.NONE, C.pop_seg));
two(0xab, rm("bts Ev,Gv", Form.NONE, A.bt_rm_r));
two(0xac, rm("shrd Ev,Gv,Ib", Form.E_IB, A.shxd));
two(0xad, rm("shrd Ev,Gv,CL", Form.NONE, A.shxd));
two(
  0xae,
  group("grp15", [
    rm("fxsave M", Form.NONE, Y.fxsave, { memOnly: true }),
    rm("fxrstor M", Form.NONE, Y.fxsave, { memOnly: true }),
    undefined,
    undefined,
    undefined,
    rm("lfence", Form.NONE, Y.fence, { regOnly: true }),
    rm("mfence", Form.NONE, Y.fence, { regOnly: true }),
    rm("sfence", Form.NONE, Y.fence, { regOnly: true }),
  ]),
);
two(0xaf, rm("imul Gv,Ev", Form.NONE, A.imul_r_rm, { h32: A.imul_r32_rm32 }));
two(0xb0, rm("cmpxchg Eb,Gb", Form.NONE, A.cmpxchg_rm_r, B));
two(0xb1, rm("cmpxchg Ev,Gv", Form.NONE, A.cmpxchg_rm_r));
two(0xb2, rm("lss Gv,Mp", Form.NONE, Y.lxs));
two(0xb3, rm("btr Ev,Gv", Form.NONE, A.bt_rm_r));
two(0xb4, rm("lfs Gv,Mp", Form.NONE, Y.lxs));
two(0xb5, rm("lgs Gv,Mp", Form.NONE, Y.lxs));
two(0xb6, rm("movzx Gv,Eb", Form.NONE, A.movx_r_rm, { h32: A.movzx_r32_rm8 }));
two(0xb7, rm("movzx Gv,Ew", Form.NONE, A.movx_r_rm, { h32: A.movzx_r32_rm16 }));
two(
  0xba,
  group("grp8 Ev,Ib", [
    undefined,
    undefined,
    undefined,
    undefined,
    rm("bt Ev,Ib", Form.E_IB, A.bt_rm_imm),
    rm("bts Ev,Ib", Form.E_IB, A.bt_rm_imm),
    rm("btr Ev,Ib", Form.E_IB, A.bt_rm_imm),
    rm("btc Ev,Ib", Form.E_IB, A.bt_rm_imm),
  ]),
);
two(0xbb, rm("btc Ev,Gv", Form.NONE, A.bt_rm_r));
two(0xbc, rm("bsf Gv,Ev", Form.NONE, A.bsf_r_rm));
two(0xbd, rm("bsr Gv,Ev", Form.NONE, A.bsr_r_rm));
two(0xbe, rm("movsx Gv,Eb", Form.NONE, A.movx_r_rm, { h32: A.movsx_r32_rm8 }));
two(0xbf, rm("movsx Gv,Ew", Form.NONE, A.movx_r_rm, { h32: A.movsx_r32_rm16 }));
two(0xc0, rm("xadd Eb,Gb", Form.NONE, A.xadd_rm_r, B));
two(0xc1, rm("xadd Ev,Gv", Form.NONE, A.xadd_rm_r));
two(0xc7, group("grp9", [undefined, rm("cmpxchg8b Mq", Form.NONE, A.cmpxchg8b, { memOnly: true })]));
for (let r = 0; r < 8; r++) two(0xc8 + r, op("bswap r32", Form.NONE, A.bswap_r));
