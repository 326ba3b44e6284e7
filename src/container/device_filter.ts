import type { DeviceRule } from "./spec.js";

/**
 * Device rules for cgroup v2, which has no devices.allow/deny files: an eBPF program of type
 * BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup decides each open and mknod
 * (Documentation/admin-guide/cgroup-v2.rst "Device controller"; runc's devicefilter does the
 * same). Compiled here; the helper only loads and attaches the bytes.
 *
 * The program sees struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } in r1,
 * access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*. The v1 model is "later rules win",
 * so the rules are checked last to first and the first match returns 1 (allow) or 0 (deny);
 * nothing matching denies. An allow rule matches when every requested access is in it, a deny
 * rule when any requested access is.
 */

// eBPF opcodes (include/uapi/linux/bpf_common.h, bpf.h)
const LDX_MEM_W = 0x61; // dst = *(u32 *)(src + off)
const MOV64_REG = 0xbf;
const MOV64_IMM = 0xb7;
const AND64_IMM = 0x57;
const RSH64_IMM = 0x77;
const JNE_IMM = 0x55;
const JEQ_IMM = 0x15;
const EXIT = 0x95;

const DEV_BLOCK = 1;
const DEV_CHAR = 2;
const ACC_MKNOD = 1;
const ACC_READ = 2;
const ACC_WRITE = 4;

export interface EbpfInsn {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
}

function accessBits(access: string | undefined): number {
  let bits = 0;
  for (const c of access || "rwm") {
    if (c === "r") bits |= ACC_READ;
    else if (c === "w") bits |= ACC_WRITE;
    else if (c === "m") bits |= ACC_MKNOD;
  }
  return bits;
}

/** Compiles device rules (in spec order) to the program; `any` of major/minor is null or -1. */
export function compileDeviceFilter(rules: readonly DeviceRule[]): EbpfInsn[] {
  const out: EbpfInsn[] = [];
  const emit = (code: number, dst: number, src: number, off: number, imm: number) =>
    out.push({ code, dst, src, off, imm });
  // r2 = type, r3 = access, r4 = major, r5 = minor
  emit(LDX_MEM_W, 2, 1, 0, 0);
  emit(MOV64_REG, 3, 2, 0, 0);
  emit(AND64_IMM, 2, 0, 0, 0xffff);
  emit(RSH64_IMM, 3, 0, 0, 16);
  emit(LDX_MEM_W, 4, 1, 4, 0);
  emit(LDX_MEM_W, 5, 1, 8, 0);
  for (const rule of [...rules].reverse()) {
    // each check jumps to the end of this rule's block on a mismatch; offsets are patched below
    const jumps: number[] = [];
    const type = rule.type && rule.type !== "a" ? (rule.type === "b" ? DEV_BLOCK : DEV_CHAR) : undefined;
    if (type !== undefined) {
      jumps.push(out.length);
      emit(JNE_IMM, 2, 0, 0, type);
    }
    const acc = accessBits(rule.access);
    if (rule.allow && acc !== (ACC_READ | ACC_WRITE | ACC_MKNOD)) {
      // every requested access must be allowed: (access & ~acc) == 0
      emit(MOV64_REG, 6, 3, 0, 0);
      emit(AND64_IMM, 6, 0, 0, ~acc & 7);
      jumps.push(out.length);
      emit(JNE_IMM, 6, 0, 0, 0);
    } else if (!rule.allow && acc !== (ACC_READ | ACC_WRITE | ACC_MKNOD)) {
      // any requested access that is denied: (access & acc) != 0
      emit(MOV64_REG, 6, 3, 0, 0);
      emit(AND64_IMM, 6, 0, 0, acc);
      jumps.push(out.length);
      emit(JEQ_IMM, 6, 0, 0, 0);
    }
    if (rule.major !== undefined && rule.major !== null && rule.major >= 0) {
      jumps.push(out.length);
      emit(JNE_IMM, 4, 0, 0, rule.major);
    }
    if (rule.minor !== undefined && rule.minor !== null && rule.minor >= 0) {
      jumps.push(out.length);
      emit(JNE_IMM, 5, 0, 0, rule.minor);
    }
    emit(MOV64_IMM, 0, 0, 0, rule.allow ? 1 : 0);
    emit(EXIT, 0, 0, 0, 0);
    for (const j of jumps) out[j]!.off = out.length - (j + 1);
    // a rule that matches everything ends the program: the verifier rejects unreachable code
    if (jumps.length === 0) return out;
  }
  emit(MOV64_IMM, 0, 0, 0, 0);
  emit(EXIT, 0, 0, 0, 0);
  return out;
}

/** struct bpf_insn[] as the kernel reads it. */
export function encodeEbpf(prog: readonly EbpfInsn[]): Buffer {
  const b = Buffer.alloc(prog.length * 8);
  prog.forEach((p, i) => {
    b.writeUInt8(p.code, i * 8);
    b.writeUInt8((p.src << 4) | p.dst, i * 8 + 1);
    b.writeInt16LE(p.off, i * 8 + 2);
    b.writeInt32LE(p.imm | 0, i * 8 + 4);
  });
  return b;
}

/** Runs the program as the kernel would, for the unit tests: 1 allow, 0 deny. */
export function runDeviceFilter(
  prog: readonly EbpfInsn[],
  type: "c" | "b",
  access: string,
  major: number,
  minor: number,
): number {
  const ctx = [(accessBits(access) << 16) | (type === "b" ? DEV_BLOCK : DEV_CHAR), major, minor];
  const r = new Array<number>(11).fill(0);
  for (let pc = 0; pc < prog.length; ) {
    const p = prog[pc]!;
    pc++;
    switch (p.code) {
      case LDX_MEM_W:
        r[p.dst] = ctx[p.off / 4]! >>> 0;
        break;
      case MOV64_REG:
        r[p.dst] = r[p.src]!;
        break;
      case MOV64_IMM:
        r[p.dst] = p.imm;
        break;
      case AND64_IMM:
        r[p.dst] = (r[p.dst]! & p.imm) >>> 0;
        break;
      case RSH64_IMM:
        r[p.dst] = r[p.dst]! >>> p.imm;
        break;
      case JNE_IMM:
        if (r[p.dst] !== p.imm >>> 0) pc += p.off;
        break;
      case JEQ_IMM:
        if (r[p.dst] === p.imm >>> 0) pc += p.off;
        break;
      case EXIT:
        return r[0]!;
      default:
        throw new Error(`runDeviceFilter: opcode 0x${p.code.toString(16)}`);
    }
  }
  throw new Error("runDeviceFilter: fell off the end");
}
