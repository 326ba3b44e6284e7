/**
 * Random instruction sequences for the differential test: ALU, shift/rotate, multiply/divide,
 * bit and data-movement instructions on random registers, immediates and data-area operands,
 * generated from a seeded PRNG as NASM text.
 *
 * The generator tracks which arithmetic flags are undefined after each instruction (Intel SDM
 * vol. 2, each instruction's "Flags Affected"): an instruction that reads a flag that is
 * currently undefined (ADC, RCL, SETcc, CMOVcc, LAHF, PUSHFD, ...) is preceded by a CMP that
 * defines all six, and the comparison masks the flags still undefined at the end. Operations
 * whose result the SDM leaves undefined are avoided by construction (BSF/BSR of zero, 16-bit
 * SHLD counts above 16, #DE-raising divisions).
 */
import { AF, CF, OF, PF, SF, ZF } from "./snippet.js";

const ALL = CF | PF | AF | ZF | SF | OF;

/** mulberry32: a small, good 32-bit PRNG. */
export class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  below(n: number): number {
    return this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)]!;
  }
  /** An "interesting" 32-bit value: edges, small numbers, sign boundaries, or random bits. */
  value(): number {
    switch (this.below(6)) {
      case 0:
        return this.pick([
          0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff,
        ]);
      case 1:
        return this.below(16);
      case 2:
        return (0x100000000 - 1 - this.below(16)) >>> 0;
      default:
        return this.next();
    }
  }
}

const R32 = ["eax", "ecx", "edx", "ebx", "ebp", "esi", "edi"];
const R16 = ["ax", "cx", "dx", "bx", "bp", "si", "di"];
const R8 = ["al", "cl", "dl", "bl", "ah", "ch", "dh", "bh"];
const CONDS: [string, number][] = [
  ["o", OF],
  ["no", OF],
  ["b", CF],
  ["ae", CF],
  ["z", ZF],
  ["nz", ZF],
  ["be", CF | ZF],
  ["a", CF | ZF],
  ["s", SF],
  ["ns", SF],
  ["p", PF],
  ["np", PF],
  ["l", SF | OF],
  ["ge", SF | OF],
  ["le", ZF | SF | OF],
  ["g", ZF | SF | OF],
];

export interface RandomProgram {
  seed: number;
  asm: string;
  regs: Record<string, number>;
  eflags: number;
  data: Uint8Array;
  /** Arithmetic flags undefined at the end (masked in the comparison). */
  undefinedFlags: number;
}

/** Bytes of the data area the program uses (its operands are DATA+0 .. DATA+DATA_USED-1). */
export const DATA_USED = 256;

/**
 * @param withCmpxchg8b false draws XLAT where CMPXCHG8B would be: a twin program for QEMU 7.2,
 *   whose CMPXCHG8B corrupts the flags and can abort QEMU (qemu_runner.ts).
 */
export function randomProgram(seed: number, length = 40, withCmpxchg8b = true): RandomProgram {
  const g = new Prng(seed);
  const lines: string[] = [];
  let undef = 0;
  const hex = (v: number) => `0x${(v >>> 0).toString(16)}`;

  const sized = () => {
    const size = g.pick([8, 16, 32, 32, 32]);
    const regs = size === 8 ? R8 : size === 16 ? R16 : R32;
    const kw = size === 8 ? "byte" : size === 16 ? "word" : "dword";
    const mask = size === 32 ? 0xffffffff : (1 << size) - 1;
    return { size, reg: () => g.pick(regs), kw, mem: () => `${kw} [DATA+${g.below(DATA_USED - 4)}]`, mask };
  };
  /** Makes the flags in `needed` defined (a CMP defines all six). */
  const need = (needed: number) => {
    if (undef & needed) {
      lines.push(`cmp ${g.pick(R32)}, ${g.pick(R32)}`);
      undef = 0;
    }
  };
  const effect = (written: number, madeUndefined: number) => {
    undef = (undef & ~written & ~madeUndefined) | madeUndefined;
  };

  const gens: (() => void)[] = [
    // two-operand ALU
    () => {
      const op = g.pick(["add", "adc", "sub", "sbb", "and", "or", "xor", "cmp", "test"]);
      const s = sized();
      if (op === "adc" || op === "sbb") need(CF);
      const form = g.below(5);
      const imm = hex(g.value() & s.mask);
      if (form === 0) lines.push(`${op} ${s.reg()}, ${s.reg()}`);
      else if (form === 1) lines.push(`${op} ${s.reg()}, ${imm}`);
      else if (form === 2 && op !== "test") lines.push(`${op} ${s.reg()}, ${s.mem()}`);
      else if (form === 3) lines.push(`${op} ${s.mem()}, ${s.reg()}`);
      else lines.push(`${op} ${s.mem()}, ${imm}`);
      if (op === "and" || op === "or" || op === "xor" || op === "test") effect(ALL & ~AF, AF);
      else effect(ALL, 0);
    },
    // sign-extended imm8 ALU forms
    () => {
      const op = g.pick(["add", "sub", "and", "or", "xor", "cmp"]);
      lines.push(`${op} ${g.pick(R32)}, byte ${(g.below(256) - 128).toString()}`);
      if (op === "and" || op === "or" || op === "xor") effect(ALL & ~AF, AF);
      else effect(ALL, 0);
    },
    // unary
    () => {
      const op = g.pick(["inc", "dec", "neg", "not"]);
      const s = sized();
      lines.push(`${op} ${g.below(3) === 0 ? s.mem() : s.reg()}`);
      if (op === "inc" || op === "dec") effect(ALL & ~CF, 0);
      else if (op === "neg") effect(ALL, 0);
    },
    // shifts and rotates
    () => {
      const op = g.pick(["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"]);
      const s = sized();
      const count = g.pick([0, 1, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, g.below(256)]);
      const masked = count & 31;
      const dst = g.below(4) === 0 ? s.mem() : s.reg();
      if (op === "rcl" || op === "rcr") need(CF);
      const form = g.below(3);
      if (form === 0 && masked === 1) lines.push(`${op} ${dst}, 1`);
      else if (form === 1) lines.push(`${op} ${dst}, ${count}`);
      else {
        lines.push(`mov cl, ${count}`);
        lines.push(`${op} ${dst}, cl`);
      }
      if (masked === 0) return;
      const ofU = masked === 1 ? 0 : OF;
      if (op === "shl" || op === "shr" || op === "sar") {
        const cfU = s.size < 32 && masked >= s.size ? CF : 0;
        effect(ALL & ~ofU & ~AF & ~cfU, AF | ofU | cfU);
      } else {
        effect(CF | (OF & ~ofU), ofU);
      }
    },
    // double shifts (32-bit: counts never exceed the operand size)
    () => {
      const op = g.pick(["shld", "shrd"]);
      const count = g.below(32);
      const dst = g.below(4) === 0 ? `dword [DATA+${g.below(DATA_USED - 4)}]` : g.pick(R32);
      lines.push(`${op} ${dst}, ${g.pick(R32)}, ${count}`);
      if (count === 0) return;
      const ofU = count === 1 ? 0 : OF;
      effect(ALL & ~AF & ~ofU, AF | ofU);
    },
    // multiply
    () => {
      const form = g.below(4);
      const s = sized();
      if (form === 0) lines.push(`${g.pick(["mul", "imul"])} ${g.below(3) === 0 ? s.mem() : s.reg()}`);
      else if (form === 1) lines.push(`imul ${g.pick(R32)}, ${g.pick(R32)}`);
      else if (form === 2) lines.push(`imul ${g.pick(R32)}, ${g.pick(R32)}, ${hex(g.value())}`);
      else
        lines.push(`imul ${g.pick(R16)}, word [DATA+${g.below(DATA_USED - 4)}], ${g.below(65536) - 32768}`);
      effect(CF | OF, SF | ZF | AF | PF);
    },
    // divide, guarded against #DE: dividend high half cleared/sign-extended, divisor made nonzero
    () => {
      const signed = g.below(2) === 0;
      const size = g.pick([8, 32]);
      const divisors8 = ["cl", "bl", "ch", "dh", "bh"];
      if (size === 32) {
        const d = g.pick(["ecx", "ebx", "esi", "edi", "ebp"]);
        lines.push(`and ${d}, 0x7fffffff`, `or ${d}, 1`);
        lines.push(signed ? "cdq" : "mov edx, 0", `${signed ? "idiv" : "div"} ${d}`);
      } else {
        const d = g.pick(divisors8);
        lines.push(`and ${d}, 0x7f`, `or ${d}, 1`);
        lines.push(signed ? "cbw" : "movzx eax, al", `${signed ? "idiv" : "div"} ${d}`);
      }
      effect(0, ALL);
    },
    // bit tests
    () => {
      const op = g.pick(["bt", "bts", "btr", "btc"]);
      const form = g.below(3);
      if (form === 0) lines.push(`${op} ${g.pick(R32)}, ${g.pick(R32)}`);
      else if (form === 1) lines.push(`${op} ${g.pick(R32)}, ${g.below(32)}`);
      else lines.push(`${op} dword [DATA+${g.below(DATA_USED - 4)}], ${g.below(32)}`);
      effect(CF, OF | SF | AF | PF);
    },
    // bit scans of a nonzero source
    () => {
      const src = g.pick(R32);
      lines.push(`or ${src}, ${hex(1 << g.below(32))}`);
      lines.push(`${g.pick(["bsf", "bsr"])} ${g.pick(R32)}, ${src}`);
      effect(ZF, CF | OF | SF | AF | PF);
    },
    // SETcc and CMOVcc
    () => {
      const [cc, reads] = g.pick(CONDS);
      need(reads);
      if (g.below(2) === 0)
        lines.push(`set${cc} ${g.below(3) === 0 ? `byte [DATA+${g.below(DATA_USED)}]` : g.pick(R8)}`);
      else
        lines.push(
          `cmov${cc} ${g.pick(R32)}, ${g.below(3) === 0 ? `dword [DATA+${g.below(DATA_USED - 4)}]` : g.pick(R32)}`,
        );
    },
    // data movement without flags
    () => {
      switch (g.below(8)) {
        case 0:
          lines.push(`xchg ${g.pick(R32)}, ${g.pick(R32)}`);
          break;
        case 1:
          lines.push(`movzx ${g.pick(R32)}, ${g.pick(R8)}`);
          break;
        case 2:
          lines.push(
            `movsx ${g.pick(R32)}, ${g.below(2) ? g.pick(R16) : `word [DATA+${g.below(DATA_USED - 2)}]`}`,
          );
          break;
        case 3:
          lines.push(
            `lea ${g.pick(R32)}, [${g.pick(R32)}+${g.pick(R32)}*${g.pick([1, 2, 4, 8])}+${hex(g.value())}]`,
          );
          break;
        case 4:
          lines.push(`bswap ${g.pick(R32)}`);
          break;
        case 5:
          lines.push(g.pick(["cbw", "cwde", "cdq", "cwd"]));
          break;
        case 6:
          lines.push(`mov dword [DATA+${g.below(DATA_USED - 4)}], ${g.pick(R32)}`);
          break;
        default:
          lines.push(`push ${g.pick(R32)}`, `pop ${g.pick(R32)}`);
      }
    },
    // XADD and CMPXCHG
    () => {
      const s = sized();
      const dst = g.below(2) === 0 ? s.mem() : s.reg();
      lines.push(`${g.pick(["xadd", "cmpxchg"])} ${dst}, ${s.reg()}`);
      effect(ALL, 0);
    },
    // string instructions over the data area, forward or backward, with and without REP
    () => {
      const kind = g.pick(["movs", "stos", "lods", "cmps", "scas"]);
      const size = g.pick(["b", "w", "d"]);
      const count = g.below(9);
      const backward = g.below(3) === 0;
      const at = (n: number) => `DATA+${(backward ? 128 + 48 : 0) + n}`;
      lines.push(`mov esi, ${at(g.below(48))}`, `mov edi, ${at(64 + g.below(48))}`, `mov ecx, ${count}`);
      lines.push(backward ? "std" : "cld");
      const rep = kind === "cmps" || kind === "scas" ? g.pick(["", "repe ", "repne "]) : g.pick(["", "rep "]);
      lines.push(`${rep}${kind}${size}`, "cld");
      // CMPS/SCAS set the flags only if they ran at least once (REP with ECX = 0 runs none).
      if ((kind === "cmps" || kind === "scas") && (rep === "" || count > 0)) effect(ALL, 0);
    },
    // conditional branches and LOOP over short forward skips
    () => {
      const label = `skip${lines.length}`;
      if (g.below(2)) {
        const [cc, reads] = g.pick(CONDS);
        need(reads);
        lines.push(`j${cc} ${label}`);
      } else {
        lines.push(`mov ecx, ${g.below(3)}`, `${g.pick(["loop", "jecxz"])} ${label}`);
      }
      // The ADD may be skipped: the flags it defines stay as undefined as they were.
      lines.push(`add ${g.pick(R32)}, ${hex(g.value())}`, `${label}:`);
    },
    // XLAT and CMPXCHG8B on the data area
    () => {
      if (g.below(2) || !withCmpxchg8b) {
        lines.push(`mov ebx, DATA+${g.below(DATA_USED - 256 + 1)}`, "xlatb");
      } else {
        lines.push(`${g.below(2) ? "lock " : ""}cmpxchg8b [DATA+${g.below(DATA_USED - 8)}]`);
        effect(ZF, 0);
      }
    },
    // flag instructions
    () => {
      switch (g.below(5)) {
        case 0:
          lines.push(g.pick(["clc", "stc"]));
          effect(CF, 0);
          break;
        case 1:
          need(CF);
          lines.push("cmc");
          break;
        case 2:
          need(SF | ZF | AF | PF | CF);
          lines.push("lahf");
          break;
        case 3:
          lines.push("sahf");
          effect(SF | ZF | AF | PF | CF, 0);
          break;
        default:
          // IF differs between the runners (0 under KVM and the soft runner, 1 in a host process).
          need(ALL);
          lines.push("pushfd", "and dword [esp], ~0x200", `pop ${g.pick(R32)}`);
          effect(ALL & ~AF, AF);
      }
    },
  ];

  for (let n = 0; n < length; n++) g.pick(gens)();

  const regs: Record<string, number> = {};
  for (const r of R32) regs[r] = g.value();
  const data = new Uint8Array(4096);
  for (let i = 0; i < DATA_USED; i++) data[i] = g.below(256);
  const eflags = 0x202 | (g.next() & ALL);
  return { seed, asm: lines.join("\n"), regs, eflags, data, undefinedFlags: undef };
}
