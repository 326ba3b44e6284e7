import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  Fpu,
  FpuInvalidOpcode,
  type FpuMemory,
  fpuInstructionWaits,
} from "../../../../src/engines/soft/fpu/fpu.js";

/** A flat little-endian memory for the FPU's operands. */
class FlatMemory implements FpuMemory {
  readonly bytes = new Uint8Array(4096);
  readonly view = new DataView(this.bytes.buffer);
  readU8(a: number): number {
    return this.view.getUint8(a);
  }
  readU16(a: number): number {
    return this.view.getUint16(a, true);
  }
  readU32(a: number): number {
    return this.view.getUint32(a, true);
  }
  writeU8(a: number, v: number): void {
    this.view.setUint8(a, v);
  }
  writeU16(a: number, v: number): void {
    this.view.setUint16(a, v, true);
  }
  writeU32(a: number, v: number): void {
    this.view.setUint32(a, v >>> 0, true);
  }
  hex(a: number, n: number): string {
    return Buffer.from(this.bytes.subarray(a, a + n)).toString("hex");
  }
}

const A = 0x100; // operand address
const B = 0x200;

function setup(hooks = {}) {
  const fpu = new Fpu(hooks);
  const mem = new FlatMemory();
  /** Runs one instruction given as its opcode and ModRM bytes (memory operand at `addr`). */
  const x = (opcode: number, modrm: number, addr = A) => fpu.execute(opcode, modrm, addr, mem, true);
  return { fpu, mem, x };
}

// ModRM bytes for a memory operand [disp32] with reg field r: 0x05 | r << 3.
const m = (r: number) => 0x05 | (r << 3);

describe("x87 loads and stores", () => {
  it("stores 1.0 and pi as the SDM's 80-bit patterns", () => {
    const { mem, x } = setup();
    x(0xd9, 0xe8); // fld1
    x(0xdb, m(7)); // fstp tword [A]
    assert.equal(mem.hex(A, 10), "0000000000000080ff3f");
    x(0xd9, 0xeb); // fldpi
    x(0xdb, m(7));
    assert.equal(mem.hex(A, 10), "35c26821a2da0fc90040");
  });

  it("rounds FLDPI down when RC is toward zero", () => {
    const { mem, x } = setup();
    mem.writeU16(B, 0x0f7f); // RC=11
    x(0xd9, m(5), B); // fldcw [B]
    x(0xd9, 0xeb); // fldpi
    x(0xdb, m(7));
    assert.equal(mem.hex(A, 10), "34c26821a2da0fc90040");
  });

  it("round-trips a 64-bit integer exactly through FILD/FISTP m64", () => {
    const { mem, x } = setup();
    mem.view.setBigInt64(A, 0x7fffffffffffffffn, true);
    x(0xdf, m(5)); // fild qword [A]
    x(0xdf, m(7), B); // fistp qword [B]
    assert.equal(mem.view.getBigInt64(B, true), 0x7fffffffffffffffn);
    mem.view.setBigInt64(A, -1234567890123456789n, true);
    x(0xdf, m(5));
    x(0xdf, m(7), B);
    assert.equal(mem.view.getBigInt64(B, true), -1234567890123456789n);
  });

  it("converts m64 NaN, infinity and denormal exactly and back", () => {
    const { fpu, mem, x } = setup();
    for (const bits of [0x7ff0000000000000n, 0xfff8000000000001n, 0x0000000000000001n, 0x800fffffffffffffn]) {
      mem.view.setBigUint64(A, bits, true);
      x(0xdd, m(0)); // fld qword [A]
      x(0xdd, m(3), B); // fstp qword [B]
      assert.equal(mem.view.getBigUint64(B, true), bits, bits.toString(16));
    }
    // The denormal loads raised DE (masked); nothing is pending.
    assert.ok(fpu.statusWord & 0x02);
    assert.equal(fpu.pendingUnmaskedException, false);
  });

  it("quiets a signaling NaN on FLD m32 and raises IE", () => {
    const { fpu, mem, x } = setup();
    mem.writeU32(A, 0x7f800001);
    x(0xd9, m(0)); // fld dword [A]
    x(0xd9, m(3), B); // fstp dword [B]
    assert.equal(mem.readU32(B), 0x7fc00001);
    assert.equal(fpu.statusWord & 0x41, 0x01);
  });

  it("rounds FST m32 per RC and sets PE and C1", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, 1 + 2 ** -30, true);
    x(0xdd, m(0));
    mem.writeU16(B, 0x0b7f); // RC=up
    x(0xd9, m(5), B);
    x(0xd9, m(2), B); // fst dword [B]
    assert.equal(mem.view.getFloat32(B, true), 1 + 2 ** -23);
    assert.equal(fpu.statusWord & 0x220, 0x220);
  });

  it("stores and loads packed BCD", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, -123456789012, true);
    x(0xdd, m(0));
    x(0xdf, m(6), B); // fbstp [B]
    assert.equal(mem.hex(B, 10), "12907856341200000080");
    x(0xdf, m(4), B); // fbld [B]
    assert.equal(fpu.stNumber(0), -123456789012);
  });
});

describe("x87 arithmetic", () => {
  it("adds, subtracts in both directions, multiplies and divides", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, 1.5, true);
    mem.view.setFloat64(B, 2.25, true);
    x(0xdd, m(0)); // fld qword [A]
    x(0xdc, m(0), B); // fadd qword [B]
    assert.equal(fpu.stNumber(0), 3.75);
    x(0xdc, m(5), B); // fsubr qword [B]: 2.25 - 3.75
    assert.equal(fpu.stNumber(0), -1.5);
    x(0xdc, m(4), B); // fsub qword [B]
    assert.equal(fpu.stNumber(0), -3.75);
    x(0xdc, m(1), B); // fmul
    assert.equal(fpu.stNumber(0), -8.4375);
    x(0xdc, m(6), B); // fdiv
    assert.equal(fpu.stNumber(0), -3.75);
    x(0xdc, m(7), B); // fdivr: 2.25 / -3.75
    assert.equal(fpu.stNumber(0), -0.6);
  });

  it("uses the DC/DE register forms' reversed FSUB/FSUBR naming", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, 10, true);
    mem.view.setFloat64(B, 4, true);
    x(0xdd, m(0)); // st1 = 10
    x(0xdd, m(0), B); // st0 = 4
    x(0xdc, 0xe9); // fsub st1, st0: st1 = 10 - 4
    assert.equal(fpu.stNumber(1), 6);
    x(0xdc, 0xe1); // fsubr st1, st0: st1 = 4 - 6
    assert.equal(fpu.stNumber(1), -2);
    x(0xde, 0xf9); // fdivp st1, st0: st1 = -2 / 4, pop
    assert.equal(fpu.stNumber(0), -0.5);
    assert.equal(fpu.stNumber(1), undefined);
  });

  it("computes in 64-bit precision by default and 53 with PC=10", () => {
    const { mem, x } = setup();
    x(0xd9, 0xe8); // fld1
    mem.view.setFloat64(B, 3, true);
    x(0xdc, m(6), B); // fdiv qword [B]
    x(0xdb, m(7)); // fstp tword [A]
    assert.equal(mem.hex(A, 10), "abaaaaaaaaaaaaaafd3f");
    mem.writeU16(B + 8, 0x027f); // PC=53
    x(0xd9, m(5), B + 8);
    x(0xd9, 0xe8);
    x(0xdc, m(6), B);
    x(0xdb, m(7));
    assert.equal(mem.hex(A, 10), "00a8aaaaaaaaaaaafd3f");
  });

  it("computes FSQRT(2) to the correctly rounded 64-bit significand", () => {
    const { mem, x } = setup();
    mem.view.setFloat64(B, 2, true);
    x(0xdd, m(0), B);
    x(0xd9, 0xfa); // fsqrt
    x(0xdb, m(7));
    assert.equal(mem.hex(A, 10), "8464def933f304b5ff3f");
  });

  it("divides by zero to infinity with ZE, and 0/0 to the indefinite with IE", () => {
    const { fpu, mem, x } = setup();
    x(0xd9, 0xe8);
    x(0xd9, 0xee); // fldz
    x(0xde, 0xf9); // fdivp: 1/0
    assert.equal(fpu.stNumber(0), Number.POSITIVE_INFINITY);
    assert.equal(fpu.statusWord & 0x3f, 0x04);
    x(0xd9, 0xee);
    x(0xd9, 0xee);
    x(0xde, 0xf9); // 0/0
    x(0xdb, m(7));
    assert.equal(mem.hex(A, 10), "00000000000000c0ffff");
    assert.equal(fpu.statusWord & 0x3f, 0x05);
  });

  it("computes FPREM and FPREM1 with the quotient bits Q2 Q1 Q0 in C0 C3 C1", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, 3, true);
    mem.view.setFloat64(B, 11, true);
    x(0xdd, m(0)); // st1 = 3
    x(0xdd, m(0), B); // st0 = 11
    x(0xd9, 0xf8); // fprem: 11 = 3*3 + 2
    assert.equal(fpu.stNumber(0), 2);
    assert.equal(fpu.statusWord & 0x4700, 0x4200); // Q=3: C1 (Q0) and C3 (Q1)
    x(0xdd, 0xd8); // fstp st0
    x(0xdd, m(0), B);
    x(0xd9, 0xf5); // fprem1: 11 = 4*3 - 1
    assert.equal(fpu.stNumber(0), -1);
    assert.equal(fpu.statusWord & 0x4700, 0x0100); // Q=4: C0 (Q2)
  });

  it("FPREM of a huge dividend is partial (C2) and converges to fmod", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, 3, true);
    mem.view.setFloat64(B, 1e300, true);
    x(0xdd, m(0));
    x(0xdd, m(0), B);
    let loops = 0;
    do {
      x(0xd9, 0xf8);
      loops++;
    } while (fpu.statusWord & 0x400);
    assert.ok(loops > 1);
    assert.equal(fpu.stNumber(0), 1e300 % 3);
  });

  it("rounds to integer per RC (FRNDINT, FIST)", () => {
    const { fpu, mem, x } = setup();
    const cases: [number, number, number][] = [
      [2.5, 0x037f, 2],
      [3.5, 0x037f, 4],
      [-2.5, 0x077f, -3],
      [-2.5, 0x0b7f, -2],
      [-2.7, 0x0f7f, -2],
    ];
    for (const [v, cw, want] of cases) {
      mem.writeU16(B, cw);
      x(0xd9, m(5), B);
      mem.view.setFloat64(A, v, true);
      x(0xdd, m(0));
      x(0xd9, 0xfc); // frndint
      assert.equal(fpu.stNumber(0), want, `frndint ${v} cw ${cw.toString(16)}`);
      x(0xdd, 0xd8); // fstp st0
      x(0xdd, m(0));
      x(0xdb, m(3), B + 8); // fistp dword
      assert.equal(mem.view.getInt32(B + 8, true), want);
    }
  });

  it("stores the integer indefinite for out-of-range FIST", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, 70000, true);
    x(0xdd, m(0));
    x(0xdf, m(3), B); // fistp word
    assert.equal(mem.readU16(B), 0x8000);
    assert.equal(fpu.statusWord & 0x01, 0x01);
  });

  it("scales, extracts and computes transcendental functions", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, 3, true);
    mem.view.setFloat64(B, 1.25, true);
    x(0xdd, m(0)); // st1 = 3
    x(0xdd, m(0), B); // st0 = 1.25
    x(0xd9, 0xfd); // fscale
    assert.equal(fpu.stNumber(0), 10);
    x(0xd9, 0xf4); // fxtract: st0 = 1.25, st1 = 3
    assert.equal(fpu.stNumber(0), 1.25);
    assert.equal(fpu.stNumber(1), 3);
    x(0xd9, 0xfe); // fsin
    assert.ok(Math.abs(fpu.stNumber(0)! - Math.sin(1.25)) < 1e-15);
    x(0xd9, 0xf2); // fptan pushes 1.0
    assert.equal(fpu.stNumber(0), 1);
  });
});

describe("x87 compares, classes and flags", () => {
  it("sets C3 C2 C0 on FCOM as FNSTSW shows them", () => {
    const ax: number[] = [];
    const { fpu, mem, x } = setup({ setAx: (v: number) => ax.push(v) });
    mem.view.setFloat64(A, 2, true);
    x(0xd9, 0xe8); // fld1
    x(0xdc, m(2)); // fcom qword [A]: 1 < 2
    x(0xdf, 0xe0); // fnstsw ax
    assert.equal(ax[0]! & 0x4500, 0x0100);
    assert.equal(fpu.lastAx, ax[0]);
    mem.view.setFloat64(A, 1, true);
    x(0xdc, m(2));
    x(0xdd, m(7), B); // fnstsw [B]
    assert.equal(mem.readU16(B) & 0x4500, 0x4000);
    mem.view.setFloat64(A, Number.NaN, true);
    x(0xdc, m(2)); // unordered: FCOM raises IE on a QNaN
    assert.equal(fpu.statusWord & 0x4501, 0x4501);
  });

  it("FUCOM does not raise IE on a quiet NaN", () => {
    const { fpu, mem, x } = setup();
    mem.view.setFloat64(A, Number.NaN, true);
    x(0xdd, m(0));
    x(0xd9, 0xe8);
    x(0xdd, 0xe1); // fucom st1
    assert.equal(fpu.statusWord & 0x4501, 0x4500);
  });

  it("reports FCOMI results as EFLAGS and pops with FCOMIP", () => {
    let got = -1;
    const { fpu, x } = setup({ setComiFlags: (f: number) => (got = f) });
    x(0xd9, 0xee); // fldz  (st1)
    x(0xd9, 0xe8); // fld1  (st0)
    x(0xdb, 0xf1); // fcomi st1: 1 > 0
    assert.equal(got, 0);
    x(0xdf, 0xf1); // fcomip st1
    assert.equal(fpu.lastComiFlags, 0);
    x(0xd9, 0xe8); // fld1: st0 = 1, st1 = 0
    x(0xdf, 0xe9); // fucomip st1: 1 vs 0
    assert.equal(got, 0);
    x(0xd9, 0xee); // fldz: 0 vs 0
    x(0xdb, 0xe9); // fucomi st1
    assert.equal(got, 0x40);
  });

  it("moves with FCMOVcc according to EFLAGS", () => {
    let eflags = 0;
    const { fpu, x } = setup({ getEflags: () => eflags });
    x(0xd9, 0xe8); // fld1 (st1)
    x(0xd9, 0xee); // fldz (st0)
    x(0xda, 0xc1); // fcmovb st0, st1: CF=0, no move
    assert.equal(fpu.stNumber(0), 0);
    eflags = 1;
    x(0xda, 0xc1);
    assert.equal(fpu.stNumber(0), 1);
  });

  it("classifies with FXAM", () => {
    const { fpu, mem, x } = setup();
    const cc = () => fpu.statusWord & 0x4700;
    x(0xd9, 0xe5); // empty
    assert.equal(cc() & 0x4500, 0x4100);
    const classes: [bigint, number][] = [
      [0x7ff8000000000000n, 0x0100], // NaN
      [0x3ff0000000000000n, 0x0400], // normal
      [0xfff0000000000000n, 0x0700], // -infinity (C1 = sign)
      [0x0000000000000000n, 0x4000], // zero
    ];
    for (const [bits, want] of classes) {
      mem.view.setBigUint64(A, bits, true);
      x(0xdd, m(0));
      x(0xd9, 0xe5);
      assert.equal(cc(), want, bits.toString(16));
      x(0xdd, 0xd8);
    }
    // An 80-bit denormal, and an unnormal (unsupported).
    mem.writeU32(A, 1);
    mem.writeU32(A + 4, 0);
    mem.writeU16(A + 8, 0);
    x(0xdb, m(5));
    x(0xd9, 0xe5);
    assert.equal(cc(), 0x4400);
    mem.writeU16(A + 8, 1);
    x(0xdb, m(5));
    x(0xd9, 0xe5);
    assert.equal(cc(), 0x0000);
  });

  it("signals stack overflow and underflow with IE, SF and C1", () => {
    const { fpu, x } = setup();
    x(0xd8, 0xc1); // fadd st0, st1 on an empty stack
    assert.equal(fpu.statusWord & 0x0241, 0x0041);
    for (let i = 0; i < 9; i++) x(0xd9, 0xe8);
    assert.equal(fpu.statusWord & 0x0241, 0x0241);
    // The masked underflow wrote the indefinite to R0; the two overflows wrote it to R0 and R7.
    assert.equal(fpu.tagWord, 0x8002);
    assert.equal(fpu.pendingUnmaskedException, false);
  });

  it("makes an unmasked exception pending for #MF, and FNCLEX clears it", () => {
    const { fpu, mem, x } = setup();
    mem.writeU16(B, 0x037e); // IM unmasked
    x(0xd9, m(5), B);
    x(0xd9, 0xe8);
    x(0xd9, 0xee);
    x(0xde, 0xf9); // 1/0 with ZE masked: fine
    assert.equal(fpu.pendingUnmaskedException, false);
    x(0xd8, 0xc3); // fadd st0, st3 (empty): unmasked IE, nothing written
    assert.equal(fpu.pendingUnmaskedException, true);
    assert.equal(fpu.statusWord & 0x8080, 0x8080);
    assert.equal(fpu.stNumber(0), Number.POSITIVE_INFINITY);
    assert.equal(fpuInstructionWaits(0xdb, 0xe2), false); // fnclex
    x(0xdb, 0xe2);
    assert.equal(fpu.pendingUnmaskedException, false);
    assert.equal(fpuInstructionWaits(0xd8, 0xc3), true);
  });

  it("rejects encodings that do not exist", () => {
    const { x } = setup();
    assert.throws(() => x(0xd9, m(1)), FpuInvalidOpcode);
    assert.throws(() => x(0xdd, m(1)), FpuInvalidOpcode); // fisttp: SSE3
    assert.throws(() => x(0xd9, 0xe2), FpuInvalidOpcode);
  });
});

describe("x87 state images", () => {
  it("writes FNSTENV's 28-byte protected-mode layout and masks exceptions", () => {
    const { fpu, mem, x } = setup();
    x(0xd9, 0xe8); // fld1 at physical R7
    x(0xd9, 0xee); // fldz at R6
    fpu.ip = 0x1234;
    fpu.cs = 0x23;
    x(0xd8, 0xc1); // fadd st0, st1 (fop 0x0c1)
    x(0xd9, m(6), B); // fnstenv [B]
    assert.equal(mem.readU16(B), 0x037f);
    assert.equal(mem.readU16(B + 4), 0x3000); // TOP=6
    assert.equal(mem.readU16(B + 8), 0x0fff); // R6 valid (1.0), R7 valid
    assert.equal(mem.readU32(B + 12), 0x1234);
    assert.equal(mem.readU32(B + 16), (0x0c1 << 16) | 0x23);
  });

  it("keeps FIP/FCS/FOP/FDP of the last non-control instruction (SDM vol. 1, 8.1.8)", () => {
    const { fpu, mem, x } = setup();
    fpu.ip = 0x100;
    fpu.cs = 0x1b;
    mem.view.setFloat64(A, 2, true);
    x(0xdd, m(0)); // fld qword [A]
    fpu.ip = 0x106;
    x(0xd9, 0xc9); // fxch st1 (register form: FDP stays)
    fpu.ip = 0x108;
    fpu.cs = 0x99;
    x(0xd9, m(6), B); // fnstenv [B]: a control instruction, its own address is not kept
    assert.equal(mem.readU32(B + 12), 0x106);
    assert.equal(mem.readU32(B + 16), (0x1c9 << 16) | 0x1b);
    assert.equal(mem.readU32(B + 20), A);
    assert.equal(fpu.ip, 0x106);
  });

  it("round-trips the stack through FNSAVE/FRSTOR and reinitializes", () => {
    const { fpu, mem, x } = setup();
    x(0xd9, 0xeb); // fldpi
    x(0xd9, 0xe8); // fld1
    x(0xdd, m(6), B); // fnsave [B]
    assert.equal(fpu.tagWord, 0xffff);
    assert.equal(mem.hex(B + 28, 10), "0000000000000080ff3f"); // ST0 = 1.0
    x(0xdd, m(4), B); // frstor [B]
    assert.equal(fpu.stNumber(0), 1);
    assert.equal(fpu.stNumber(1), Math.PI);
    assert.equal(fpu.tagWord, 0x0fff);
  });

  it("round-trips FXSAVE/FXRSTOR with the abridged tag", () => {
    const { fpu, mem } = setup();
    const other = setup();
    other.x(0xd9, 0xeb);
    other.x(0xd9, 0xee);
    other.fpu.fxsave(0, mem);
    assert.equal(mem.readU16(0), 0x037f);
    assert.equal(mem.readU8(4), 0xc0); // R6, R7 in use
    assert.equal(mem.readU32(24), 0x1f80);
    assert.equal(mem.hex(48, 10), "35c26821a2da0fc90040"); // ST1 = pi
    fpu.fxrstor(0, mem);
    assert.equal(fpu.tagWord, 0x1fff); // R6 zero (01), R7 valid
    assert.equal(fpu.stNumber(1), Math.PI);
  });
});
