/**
 * Random x87 programs for the differential test against the host CPU: each step sets a random
 * precision and rounding control, loads random operands (m32, m64, m80, m16/m32/m64 integers;
 * normals, denormals, zeros, infinities, NaNs, huge and tiny 80-bit exponents), runs one
 * operation, and stores every result as m80 (or the memory format under test) together with the
 * status-word bits the SDM defines for that operation. Each step starts and ends with an empty
 * stack, so steps are independent. Transcendental instructions are left out (the soft FPU
 * computes them in double precision: a documented limit, see src/engines/soft/fpu/ext80.ts).
 */
import { Prng } from "./random_program.js";

export interface RandomX87Program {
  seed: number;
  asm: string;
  data: Uint8Array;
}

/** Status word bits: the six exception flags, SF, and the condition codes. */
/** The exception flags, SF, and ES/B (set when an exception is unmasked). */
const EXC = 0x80ff;
const C0 = 0x100;
const C1 = 0x200;
const C2 = 0x400;
const C3 = 0x4000;

const OPERANDS = 0x000; // operand slots: 16 bytes each, 64 slots
const OUTPUT = 0x400; // output records: 32 bytes each
const CW = 0xf00; // control words

function randomOperand(g: Prng, out: DataView, at: number): "m32" | "m64" | "m80" | "i16" | "i32" | "i64" {
  const kind = g.pick(["m32", "m64", "m64", "m80", "m80", "m80", "i16", "i32", "i64"] as const);
  switch (kind) {
    case "m32": {
      const special = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x00000001, 0x007fffff, 0x3f800000];
      out.setUint32(at, g.below(4) === 0 ? g.pick(special) : g.next(), true);
      break;
    }
    case "m64": {
      const choice = g.below(6);
      if (choice === 0)
        out.setFloat64(at, g.pick([0, -0, 1, -1, 0.5, 3, 10, 1e300, -1e-300, Number.MAX_VALUE]), true);
      else if (choice === 1) {
        out.setUint32(at, g.next(), true);
        out.setUint32(
          at + 4,
          g.pick([0, 0x80000000, 0x7ff00000, 0xfff80000, 0x000fffff]) | (g.next() & 0xfffff),
          true,
        );
      } else if (choice === 2) out.setFloat64(at, (g.next() - 0x80000000) / (1 + g.below(1000)), true);
      else {
        out.setUint32(at, g.next(), true);
        out.setUint32(at + 4, g.next(), true);
      }
      break;
    }
    case "m80": {
      // A normal 80-bit value (J set), sometimes with an extreme exponent, or zero/denormal/inf/NaN.
      const choice = g.below(10);
      let exp: number;
      let hi = (g.next() | 0x80000000) >>> 0;
      let lo = g.next();
      if (choice === 0) exp = g.below(40) + 1;
      else if (choice === 1) exp = 0x7ffe - g.below(40);
      else if (choice === 2) {
        exp = 0;
        hi &= 0x7fffffff;
      } else if (choice === 3) {
        exp = 0x7fff;
        if (g.below(2)) {
          hi = 0x80000000;
          lo = 0;
        } else hi |= 0x40000000;
      } else exp = 0x3fff + g.below(128) - 64;
      if (choice === 4) lo &= 0xfffff800; // a value that rounds exactly in double precision
      out.setUint32(at, lo, true);
      out.setUint32(at + 4, hi, true);
      out.setUint16(at + 8, exp | (g.below(2) << 15), true);
      break;
    }
    case "i16":
      out.setUint16(at, g.next() & 0xffff, true);
      break;
    case "i32":
      out.setUint32(at, g.next(), true);
      break;
    default:
      out.setUint32(at, g.next(), true);
      out.setUint32(at + 4, g.next(), true);
  }
  return kind;
}

const LOAD: Record<string, string> = {
  m32: "fld dword",
  m64: "fld qword",
  m80: "fld tword",
  i16: "fild word",
  i32: "fild dword",
  i64: "fild qword",
};

/**
 * @param unmask when true, some steps unmask IE, DE, ZE or PE (never OE/UE: their bias-adjusted
 *   results are a documented limit of the soft FPU): the program then ends with #MF at the next
 *   waiting instruction, and the runners must agree on where and on everything stored before.
 */
export function randomX87Program(seed: number, steps = 24, unmask = false): RandomX87Program {
  const g = new Prng(seed);
  const data = new Uint8Array(4096);
  const view = new DataView(data.buffer);
  const lines: string[] = ["fninit"];
  let slot = 0;
  const operand = () => {
    const at = OPERANDS + 16 * (slot++ % 64);
    const kind = randomOperand(g, view, at);
    return `${LOAD[kind]} [DATA+0x${at.toString(16)}]`;
  };
  for (let step = 0; step < steps && step < 48; step++) {
    const out = OUTPUT + 32 * step;
    const o = (k: number) => `[DATA+0x${(out + k).toString(16)}]`;
    const unmasked = unmask && g.below(4) === 0 ? g.pick([0x01, 0x02, 0x04, 0x20, 0x25, 0x07]) : 0;
    const cw = (0x3f & ~unmasked) | (g.pick([0, 2, 3]) << 8) | (g.below(4) << 10);
    view.setUint16(CW + 2 * step, cw, true);
    lines.push(`fldcw [DATA+0x${(CW + 2 * step).toString(16)}]`, "fnclex");
    /** Stores the status word under `mask` at out+30. */
    const status = (mask: number) =>
      lines.push("fnstsw ax", `and ax, 0x${mask.toString(16)}`, `mov ${o(30)}, ax`);
    switch (g.below(13)) {
      case 11: {
        // FBLD of random BCD digits (valid, or with non-decimal nibbles) and back with FBSTP
        const at = OPERANDS + 16 * (slot++ % 64);
        for (let k = 0; k < 9; k++) {
          const valid = g.below(8) !== 0;
          view.setUint8(at + k, valid ? g.below(10) * 16 + g.below(10) : g.below(256));
        }
        view.setUint8(at + 9, g.below(2) ? 0x80 : 0);
        lines.push(
          `fbld [DATA+0x${at.toString(16)}]`,
          `fst tword ${o(0)}`.replace("fst tword", "fld st0\nfstp tword"),
        );
        lines.push(`fbstp ${o(10)}`);
        status(EXC | C1);
        break;
      }
      case 12: {
        // FICOM/FICOMP with integer operands, FUCOM/FUCOMP on registers
        lines.push(operand());
        if (g.below(2)) {
          const at = OPERANDS + 16 * (slot++ % 64);
          view.setUint32(at, g.next(), true);
          lines.push(
            `${g.pick(["ficom", "ficomp"])} ${g.pick(["word", "dword"])} [DATA+0x${at.toString(16)}]`,
          );
        } else {
          lines.push(operand(), g.pick(["fucom st1", "fucomp st1", "fcom st1", "fcomp st1"]));
        }
        status(EXC | C0 | C1 | C2 | C3);
        lines.push("fninit");
        break;
      }
      case 9: {
        // the constant ROM under the rounding control, and FXCH/FST ST(i)/FFREE on the stack
        lines.push(g.pick(["fld1", "fldz", "fldpi", "fldl2e", "fldl2t", "fldlg2", "fldln2"]), operand());
        lines.push(g.pick(["fxch st1", "fst st1", "fld st1", "fincstp", "fdecstp"]));
        lines.push("fnstenv [DATA+0xf80]", "mov ax, [DATA+0xf88]", `mov ${o(28)}, ax`, "fninit");
        lines.push(`fstp tword ${o(0)}`);
        status(EXC | C1);
        break;
      }
      case 10: {
        // stack faults (masked): underflow in arithmetic, overflow on a full stack
        if (g.below(2)) {
          lines.push(g.pick(["fadd st0, st3", "fsqrt", "fchs", "fxch st5", "fcom st2"]));
          status(EXC | C1);
          lines.push("fninit");
        } else {
          for (let k = 0; k < 8; k++) lines.push("fld1");
          lines.push(operand());
          status(EXC | C1);
          lines.push(`fstp tword ${o(0)}`, "fninit");
        }
        break;
      }
      case 0: {
        // two-operand arithmetic, register forms
        lines.push(operand(), operand());
        lines.push(`${g.pick(["faddp", "fsubp", "fsubrp", "fmulp", "fdivp", "fdivrp"])} st1, st0`);
        lines.push(`fstp tword ${o(0)}`);
        status(EXC | C1);
        break;
      }
      case 1: {
        // arithmetic with a memory operand
        lines.push(operand());
        const at = OPERANDS + 16 * (slot++ % 64);
        const kind = g.pick(["m32", "m64", "i16", "i32"] as const);
        let k = randomOperand(g, view, at);
        while (k !== kind) k = randomOperand(g, view, at);
        const size = { m32: "dword", m64: "qword", i16: "word", i32: "dword" }[kind];
        const op = g.pick(["add", "sub", "subr", "mul", "div", "divr"]);
        lines.push(`f${kind.startsWith("i") ? "i" : ""}${op} ${size} [DATA+0x${at.toString(16)}]`);
        lines.push(`fstp tword ${o(0)}`);
        status(EXC | C1);
        break;
      }
      case 2: {
        lines.push(operand(), g.pick(["fsqrt", "frndint", "fabs", "fchs"]), `fstp tword ${o(0)}`);
        status(EXC | C1);
        break;
      }
      case 3: {
        // FPREM / FPREM1: remainder and quotient bits
        lines.push(operand(), operand(), g.pick(["fprem", "fprem1"]));
        status(EXC | C0 | C1 | C2 | C3);
        lines.push(`fstp tword ${o(0)}`, `fstp tword ${o(10)}`);
        break;
      }
      case 4: {
        lines.push(operand(), operand(), "fscale", `fstp tword ${o(0)}`, `fstp tword ${o(10)}`);
        status(EXC | C1);
        break;
      }
      case 5: {
        lines.push(operand(), "fxtract", `fstp tword ${o(0)}`, `fstp tword ${o(10)}`);
        status(EXC | C1);
        break;
      }
      case 6: {
        // compares: condition codes and, for FCOMI, EFLAGS
        lines.push(operand(), operand());
        if (g.below(2)) {
          lines.push(g.pick(["fcompp", "fucompp"]));
          status(EXC | C0 | C1 | C2 | C3);
        } else {
          lines.push(g.pick(["fcomip st0, st1", "fucomip st0, st1"]), "fstp st0");
          lines.push(`setz ${o(0)}`, `setp ${o(1)}`, `setc ${o(2)}`);
          status(EXC);
        }
        break;
      }
      case 7: {
        // stores to memory formats and integers, with the rounding control
        lines.push(operand());
        const store = g.pick(["fst dword", "fst qword", "fist word", "fist dword", "fbstp", "fistp qword"]);
        lines.push(`${store} ${o(0)}`);
        if (store !== "fbstp" && store !== "fistp qword") lines.push("fstp st0");
        status(EXC | C1);
        break;
      }
      default: {
        lines.push(operand(), "ftst");
        status(EXC | C0 | C2 | C3);
        lines.push("fxam", "fnstsw ax", `mov ${o(28)}, ax`, `fstp tword ${o(0)}`);
      }
    }
  }
  return { seed, asm: lines.join("\n"), data };
}
