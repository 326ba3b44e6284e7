import { ContainerError } from "./errors.js";
import type { Seccomp, SeccompSyscall } from "./spec.js";
import { SYSCALLS_I386, SYSCALLS_X86_64 } from "./syscalls.js";

/**
 * Compiles the OCI `linux.seccomp` section to a classic BPF program for seccomp(2)
 * (Documentation/userspace-api/seccomp_filter.rst), in TypeScript; the helper only loads the bytes.
 *
 * Shape of the program:
 *   ld arch; for each listed architecture: jeq AUDIT_ARCH_x -> ja <section x>; ret KILL_PROCESS
 *   section x: ld nr; [x86_64: nr >= 0x40000000 (x32) -> kill, or strip the bit when X32 is listed]
 *     per rule, in spec order (first match wins):
 *       without args:  jeq NR, 0, 1; ret ACTION
 *       with args:     jeq NR, 0, <end>; <comparisons, 64-bit as hi/lo words>; ret ACTION; end: ld nr
 *     ret DEFAULT
 * Every return is inline, so conditional jumps stay short (BPF jt/jf are 8-bit).
 * Multiple conditions on different arguments must all hold; conditions that all name the same
 * argument are alternatives (runc's behaviour, since libseccomp cannot AND one argument).
 */

export { SECCOMP_ACTIONS, SECCOMP_ARCHES, SECCOMP_OPS } from "./seccomp_names.js";

export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_I386 = 0x40000003;
const X32_SYSCALL_BIT = 0x40000000;

/** seccomp return values (include/uapi/linux/seccomp.h). */
export const RET = {
  KILL_PROCESS: 0x80000000,
  KILL_THREAD: 0x00000000,
  TRAP: 0x00030000,
  ERRNO: 0x00050000,
  USER_NOTIF: 0x7fc00000,
  TRACE: 0x7ff00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
} as const;

const FILTER_FLAGS: Record<string, number> = {
  SECCOMP_FILTER_FLAG_TSYNC: 1,
  SECCOMP_FILTER_FLAG_LOG: 2,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW: 4,
};

// BPF opcodes (include/uapi/linux/bpf_common.h)
const LD_W_ABS = 0x20;
const JMP_JA = 0x05;
const JEQ_K = 0x15;
const JGT_K = 0x25;
const JGE_K = 0x35;
const AND_K = 0x54;
const RET_K = 0x06;

export interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

export interface CompiledSeccomp {
  program: Insn[];
  /** seccomp(2) SECCOMP_SET_MODE_FILTER flags */
  flags: number;
}

type Target = string | null; // a label, or null for "the next instruction"
interface PendingInsn {
  code: number;
  k: number;
  jt?: Target;
  jf?: Target;
  ja?: string;
}

class Assembler {
  readonly code: (PendingInsn | { label: string })[] = [];
  private n = 0;
  label(): string {
    return `L${this.n++}`;
  }
  at(label: string): void {
    this.code.push({ label });
  }
  ld(off: number): void {
    this.code.push({ code: LD_W_ABS, k: off });
  }
  and(k: number): void {
    this.code.push({ code: AND_K, k: k >>> 0 });
  }
  jmp(code: number, k: number, jt: Target, jf: Target): void {
    this.code.push({ code, k: k >>> 0, jt, jf });
  }
  ja(label: string): void {
    this.code.push({ code: JMP_JA, k: 0, ja: label });
  }
  ret(k: number): void {
    this.code.push({ code: RET_K, k: k >>> 0 });
  }
  assemble(): Insn[] {
    const where = new Map<string, number>();
    let idx = 0;
    for (const c of this.code) {
      if ("label" in c) where.set(c.label, idx);
      else idx++;
    }
    const out: Insn[] = [];
    const rel = (t: Target | undefined, at: number): number => {
      if (t === null || t === undefined) return 0;
      const dest = where.get(t);
      if (dest === undefined) throw new Error(`seccomp: undefined label ${t}`);
      const off = dest - (at + 1);
      if (off < 0) throw new Error("seccomp: backward jump");
      return off;
    };
    for (const c of this.code) {
      if ("label" in c) continue;
      const at = out.length;
      if (c.ja !== undefined) {
        out.push({ code: c.code, jt: 0, jf: 0, k: rel(c.ja, at) });
        continue;
      }
      const jt = rel(c.jt, at);
      const jf = rel(c.jf, at);
      if (jt > 255 || jf > 255) throw new Error("seccomp: conditional jump too far");
      out.push({ code: c.code, jt, jf, k: c.k });
    }
    if (out.length > 4096) {
      throw new ContainerError(
        "seccomp_too_long",
        `the seccomp profile compiles to ${out.length} BPF instructions; the kernel allows 4096`,
      );
    }
    return out;
  }
}

function actionValue(action: string, errnoRet: number | undefined, defaultErrno: number): number {
  switch (action) {
    case "SCMP_ACT_KILL":
    case "SCMP_ACT_KILL_THREAD":
      return RET.KILL_THREAD;
    case "SCMP_ACT_KILL_PROCESS":
      return RET.KILL_PROCESS;
    case "SCMP_ACT_TRAP":
      return RET.TRAP;
    case "SCMP_ACT_ERRNO":
      return RET.ERRNO | ((errnoRet ?? defaultErrno) & 0xffff);
    case "SCMP_ACT_TRACE":
      return RET.TRACE | ((errnoRet ?? defaultErrno) & 0xffff);
    case "SCMP_ACT_ALLOW":
      return RET.ALLOW;
    case "SCMP_ACT_LOG":
      return RET.LOG;
    case "SCMP_ACT_NOTIFY":
      throw new ContainerError(
        "seccomp_notify",
        "seccomp action SCMP_ACT_NOTIFY (user notification through listenerPath) is not supported by vessel-runc",
      );
    default:
      throw new ContainerError("seccomp_action", `unknown seccomp action "${action}"`);
  }
}

const EPERM = 1;
const argLo = (i: number) => 16 + 8 * i;
const argHi = (i: number) => 16 + 8 * i + 4;

function u64(v: number | undefined): bigint {
  if (v === undefined) return 0n;
  return BigInt.asUintN(64, BigInt(Math.trunc(v)));
}

type Arg = NonNullable<SeccompSyscall["args"]>[number];

/** Emits one comparison: jumps to `t` when it holds, `f` when not (null = fall through). */
function compare(a: Assembler, arg: Arg, wide: boolean, t: Target, f: Target): void {
  const v = u64(arg.value);
  const v2 = u64(arg.valueTwo);
  const hi = Number(v >> 32n);
  const lo = Number(v & 0xffffffffn);
  const i = arg.index;
  // 32-bit architectures only have the low word; the high word is compared only on 64-bit ones.
  const hiPart = (next: () => void) => {
    if (wide) next();
  };
  switch (arg.op) {
    case "SCMP_CMP_EQ":
      hiPart(() => {
        a.ld(argHi(i));
        a.jmp(JEQ_K, hi, null, f);
      });
      a.ld(argLo(i));
      a.jmp(JEQ_K, lo, t, f);
      return;
    case "SCMP_CMP_NE":
      hiPart(() => {
        a.ld(argHi(i));
        a.jmp(JEQ_K, hi, null, t);
      });
      a.ld(argLo(i));
      a.jmp(JEQ_K, lo, f, t);
      return;
    case "SCMP_CMP_GT":
    case "SCMP_CMP_GE": {
      const op = arg.op === "SCMP_CMP_GT" ? JGT_K : JGE_K;
      hiPart(() => {
        a.ld(argHi(i));
        a.jmp(JGT_K, hi, t, null);
        a.jmp(JEQ_K, hi, null, f);
      });
      a.ld(argLo(i));
      a.jmp(op, lo, t, f);
      return;
    }
    case "SCMP_CMP_LT":
    case "SCMP_CMP_LE": {
      // LT is not GE, LE is not GT
      const op = arg.op === "SCMP_CMP_LT" ? JGE_K : JGT_K;
      hiPart(() => {
        a.ld(argHi(i));
        a.jmp(JGT_K, hi, f, null);
        a.jmp(JEQ_K, hi, null, t);
      });
      a.ld(argLo(i));
      a.jmp(op, lo, f, t);
      return;
    }
    case "SCMP_CMP_MASKED_EQ": {
      hiPart(() => {
        a.ld(argHi(i));
        a.and(Number(v >> 32n));
        a.jmp(JEQ_K, Number(v2 >> 32n), null, f);
      });
      a.ld(argLo(i));
      a.and(Number(v & 0xffffffffn));
      a.jmp(JEQ_K, Number(v2 & 0xffffffffn), t, f);
      return;
    }
    default:
      throw new ContainerError("seccomp_op", `unknown seccomp operator "${arg.op}"`);
  }
}

function emitSection(
  a: Assembler,
  s: Seccomp,
  table: Readonly<Record<string, number>>,
  wide: boolean,
  x32: "kill" | "strip" | "none",
): void {
  const defErrno = s.defaultErrnoRet ?? EPERM;
  a.ld(0);
  if (x32 !== "none") {
    const skip = a.label();
    a.jmp(JGE_K, X32_SYSCALL_BIT, null, skip);
    if (x32 === "kill") a.ret(RET.KILL_PROCESS);
    else a.and(~X32_SYSCALL_BIT);
    a.at(skip);
  }
  for (const rule of s.syscalls ?? []) {
    const action = actionValue(rule.action, rule.errnoRet, EPERM);
    for (const name of rule.names) {
      const nr = table[name];
      if (nr === undefined) continue; // unknown on this architecture: runc ignores these too
      const args = rule.args ?? [];
      if (args.length === 0) {
        a.jmp(JEQ_K, nr, null, "+1");
        a.ret(action);
        continue;
      }
      const end = a.label();
      const match = a.label();
      a.jmp(JEQ_K, nr, null, end);
      const sameIndex = args.every((x) => x.index === args[0]!.index);
      if (sameIndex && args.length > 1) {
        for (const arg of args) {
          const next = a.label();
          compare(a, arg, wide, match, next);
          a.at(next);
        }
        a.ja(end);
      } else {
        for (const arg of args) {
          const next = a.label();
          compare(a, arg, wide, next, end);
          a.at(next);
        }
      }
      a.at(match);
      a.ret(action);
      a.at(end);
      a.ld(0);
      if (x32 === "strip") a.and(~X32_SYSCALL_BIT);
    }
  }
  a.ret(actionValue(s.defaultAction, s.defaultErrnoRet, defErrno));
}

/** Compiles an OCI seccomp section; throws ContainerError for what cannot be compiled. */
export function compileSeccomp(s: Seccomp): CompiledSeccomp {
  const arches = s.architectures?.length ? s.architectures : ["SCMP_ARCH_X86_64"];
  const a = new Assembler();
  const sections: { audit: number; label: string; table: Readonly<Record<string, number>>; wide: boolean }[] =
    [];
  const x32 = arches.includes("SCMP_ARCH_X32");
  if (arches.includes("SCMP_ARCH_X86_64") || x32)
    sections.push({ audit: AUDIT_ARCH_X86_64, label: a.label(), table: SYSCALLS_X86_64, wide: true });
  if (arches.includes("SCMP_ARCH_X86"))
    sections.push({ audit: AUDIT_ARCH_I386, label: a.label(), table: SYSCALLS_I386, wide: false });
  a.ld(4);
  for (const sec of sections) {
    a.jmp(JEQ_K, sec.audit, null, "+1");
    a.ja(sec.label);
  }
  // a foreign architecture (e.g. 32-bit calls when only x86_64 is listed) is never allowed
  a.ret(RET.KILL_PROCESS);
  for (const sec of sections) {
    a.at(sec.label);
    emitSection(
      a,
      s,
      sec.table,
      sec.wide,
      sec.audit === AUDIT_ARCH_X86_64 ? (x32 ? "strip" : "kill") : "none",
    );
  }
  // "+1" targets: skip exactly one instruction (the inline ret or ja after a jeq)
  const code = a.code;
  for (let i = 0; i < code.length; i++) {
    const c = code[i]!;
    if ("label" in c || c.jf !== "+1") continue;
    const l = a.label();
    let j = i + 1;
    while (j < code.length && "label" in code[j]!) j++;
    code.splice(j + 1, 0, { label: l });
    c.jf = l;
  }
  let flags = 0;
  for (const f of s.flags ?? []) {
    const bit = FILTER_FLAGS[f];
    if (bit === undefined) throw new ContainerError("seccomp_flag", `seccomp flag "${f}" is not supported`);
    flags |= bit;
  }
  return { program: a.assemble(), flags };
}

/** struct sock_filter[] as the kernel reads it (little-endian u16 code, u8 jt, u8 jf, u32 k). */
export function encodeProgram(program: readonly Insn[]): Buffer {
  const b = Buffer.alloc(program.length * 8);
  program.forEach((p, i) => {
    b.writeUInt16LE(p.code, i * 8);
    b.writeUInt8(p.jt, i * 8 + 2);
    b.writeUInt8(p.jf, i * 8 + 3);
    b.writeUInt32LE(p.k >>> 0, i * 8 + 4);
  });
  return b;
}

/** What a system call sees: struct seccomp_data. */
export interface SeccompData {
  nr: number;
  arch: number;
  args?: bigint[];
}

/**
 * Runs a classic BPF program over a seccomp_data, as the kernel would: for the unit tests and for
 * `--debug` explanations. Supports exactly the instructions the compiler emits.
 */
export function runFilter(program: readonly Insn[], data: SeccompData): number {
  const word = (off: number): number => {
    if (off === 0) return data.nr >>> 0;
    if (off === 4) return data.arch >>> 0;
    const i = Math.floor((off - 16) / 8);
    const v = data.args?.[i] ?? 0n;
    return Number((off - 16) % 8 === 0 ? v & 0xffffffffn : (v >> 32n) & 0xffffffffn);
  };
  let acc = 0;
  for (let pc = 0; pc < program.length; ) {
    const p = program[pc]!;
    switch (p.code) {
      case LD_W_ABS:
        acc = word(p.k);
        pc++;
        break;
      case AND_K:
        acc = (acc & p.k) >>> 0;
        pc++;
        break;
      case JMP_JA:
        pc += 1 + p.k;
        break;
      case JEQ_K:
        pc += 1 + (acc === p.k >>> 0 ? p.jt : p.jf);
        break;
      case JGT_K:
        pc += 1 + (acc > p.k >>> 0 ? p.jt : p.jf);
        break;
      case JGE_K:
        pc += 1 + (acc >= p.k >>> 0 ? p.jt : p.jf);
        break;
      case RET_K:
        return p.k >>> 0;
      default:
        throw new Error(`runFilter: opcode 0x${p.code.toString(16)}`);
    }
  }
  throw new Error("runFilter: fell off the end of the program");
}
