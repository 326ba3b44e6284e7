import { VesselError } from "../../../errors.js";
import {
  abs,
  BIAS,
  classify,
  DOUBLE,
  EXP_MAX,
  EXTENDED,
  Ext80,
  Ext80Math,
  INDEFINITE,
  infinity,
  isNaNKind,
  Kind,
  negate,
  ONE,
  PRECISION,
  quiet,
  type Rc,
  SINGLE,
  Sw,
  ZERO,
  zero,
} from "./ext80.js";

/**
 * The x87 floating-point unit of the software CPU (Intel SDM vol. 1 ch. 8, vol. 2 instruction
 * pages): register stack, control/status/tag words, every instruction of opcodes D8-DF a 686
 * Linux kernel and glibc/musl user space use, and the FNSTENV/FNSAVE/FXSAVE memory images.
 *
 * Values are held as exact 80-bit numbers (ext80.ts); see there for which operations are exact.
 *
 * How the CPU core drives it:
 * - Before a waiting x87 instruction (`fpuInstructionWaits(opcode, modrm)`) or WAIT/FWAIT, the
 *   core raises #MF (vector 16, CR0.NE=1) when `pendingUnmaskedException` is true. CR0.EM/TS
 *   (#NM) checks are the core's.
 * - It calls `execute(opcode, modrm, address, mem, operandSize32)`; memory faults thrown by
 *   `mem` propagate, and the FPU state is unchanged when a read faults (reads happen first).
 * - Results that leave the FPU: FNSTSW AX calls `hooks.setAx` (and leaves `lastAx`);
 *   FCOMI/FCOMIP/FUCOMI/FUCOMIP call `hooks.setComiFlags` with ZF/PF/CF as an EFLAGS mask (OF, SF
 *   and AF are to be cleared) and leave it in `lastComiFlags` (-1 after any other instruction);
 *   FCMOVcc reads `hooks.getEflags()`.
 * - An encoding that does not exist (or FISTTP, SSE3 which we do not advertise) throws
 *   `FpuInvalidOpcode`; the core turns it into #UD.
 * - The core may set `ip`, `cs` (the instruction's offset and code selector) before `execute` so
 *   FNSTENV/FNSAVE/FXSAVE report them; the data pointer is the operand's linear address.
 *
 * Checked against the hardware: test/engines/soft/oracle runs the same x87 snippets natively on
 * the host CPU (hand-written cases and thousands of random programs: every precision and
 * rounding control, NaN/denormal/infinity operands, masked and unmasked exceptions, status and
 * tag words, FNSTENV/FNSAVE/FXSAVE images) and they agree bit for bit.
 *
 * Limits: unmasked overflow/underflow store the masked result (no 2^24576 bias adjustment);
 * FNSTENV/FLDENV/FNSAVE/FRSTOR use the protected-mode layouts in every mode; transcendental
 * instructions compute in double precision (53-bit significand; within 2 ulps of a double of the
 * hardware in the oracle test); FDS is whatever the core stores in `ds` (0 by default).
 * Speed: about 1.5 M x87 instructions per second (BigInt arithmetic; FLD/FMUL/FSTP m64 loop).
 */

/** Thrown for an x87 encoding that does not exist or is not implemented; the CPU raises #UD. */
export class FpuInvalidOpcode extends VesselError {}

export interface FpuMemory {
  readU8(linear: number): number;
  readU16(linear: number): number;
  readU32(linear: number): number;
  writeU8(linear: number, value: number): void;
  writeU16(linear: number, value: number): void;
  writeU32(linear: number, value: number): void;
}

/** What the FPU needs from the CPU core (all optional; see the class comment). */
export interface FpuCpuHooks {
  /** Current EFLAGS (FCMOVcc). */
  getEflags?(): number;
  /** FNSTSW AX: the new value of AX. */
  setAx?(value: number): void;
  /** FCOMI family: ZF|PF|CF bits in EFLAGS positions; the core also clears OF, SF and AF. */
  setComiFlags?(flags: number): void;
}

/** EFLAGS bits used by FCOMI and FCMOVcc. */
const CF = 0x001;
const PF = 0x004;
const ZF = 0x040;

const TAG_VALID = 0;
const TAG_ZERO = 1;
const TAG_SPECIAL = 2;
const TAG_EMPTY = 3;

/**
 * True when the instruction is a waiting one (checks for a pending unmasked exception first):
 * every x87 instruction except FNINIT, FNCLEX, FNSTCW, FNSTSW, FNSTENV and FNSAVE (SDM vol. 1,
 * 8.3.12), and FENI/FDISI/FSETPM which are no-ops since the 387.
 */
export function fpuInstructionWaits(opcode: number, modrm: number): boolean {
  const reg = (modrm >> 3) & 7;
  if (modrm < 0xc0) {
    if (opcode === 0xd9 && (reg === 6 || reg === 7)) return false; // FNSTENV, FNSTCW
    if (opcode === 0xdd && (reg === 6 || reg === 7)) return false; // FNSAVE, FNSTSW m16
    return true;
  }
  if (opcode === 0xdb && modrm >= 0xe0 && modrm <= 0xe4) return false; // FENI FDISI FNCLEX FNINIT FSETPM
  if (opcode === 0xdf && modrm === 0xe0) return false; // FNSTSW AX
  return true;
}

export class Fpu {
  /** Physical registers R0-R7 (ST(i) is R[(TOP + i) & 7]). */
  private readonly regs: Ext80[] = new Array<Ext80>(8).fill(ZERO);
  /** Physical tags: only empty / not empty is stored; the 2-bit tag is computed from the value. */
  private readonly empty: boolean[] = new Array<boolean>(8).fill(true);
  /** Control word (bit 6 reads as 1). */
  cw = 0x037f;
  /** Status word with TOP in bits 11-13. */
  private sw = 0;
  /** Last x87 opcode (11 bits), instruction pointer, selector, data pointer and selector. */
  fop = 0;
  /** FIP and FCS of the last non-control instruction (what FNSTENV/FNSAVE/FXSAVE store). */
  private lastIp = 0;
  private lastCs = 0;
  /** The current instruction's offset and code selector, set by the CPU core before `execute`. */
  private curIp = 0;
  private curCs = 0;
  dp = 0;
  ds = 0;
  /** MXCSR image kept for FXSAVE/FXRSTOR (SSE is not implemented; default 0x1F80). */
  mxcsr = 0x1f80;
  /** FCOMI family result (ZF|PF|CF) of the last instruction, or -1. */
  lastComiFlags = -1;
  /** FNSTSW AX result of the last instruction, or -1. */
  lastAx = -1;

  private readonly math = new Ext80Math();
  private readonly hooks: FpuCpuHooks;

  constructor(hooks: FpuCpuHooks = {}) {
    this.hooks = hooks;
    this.fninit();
  }

  /**
   * The core sets these to the offset and CS selector of the instruction about to execute; the
   * FPU keeps them as FIP/FCS only for non-control instructions (SDM vol. 1, 8.1.8), and reading
   * them gives the kept values.
   */
  get ip(): number {
    return this.lastIp;
  }
  set ip(v: number) {
    this.curIp = v;
  }
  get cs(): number {
    return this.lastCs;
  }
  set cs(v: number) {
    this.curCs = v;
  }

  /** Status word with the current TOP. */
  get statusWord(): number {
    return this.sw;
  }
  get controlWord(): number {
    return this.cw;
  }
  /** Full 16-bit tag word (SDM vol. 1, 8.1.7). */
  get tagWord(): number {
    let t = 0;
    for (let i = 0; i < 8; i++) t |= this.tagOf(i) << (2 * i);
    return t;
  }
  /** An unmasked exception is pending (status word ES): the next waiting instruction takes #MF. */
  get pendingUnmaskedException(): boolean {
    return (this.sw & Sw.ES) !== 0;
  }
  private get top(): number {
    return (this.sw >> 11) & 7;
  }
  private set top(v: number) {
    this.sw = (this.sw & ~0x3800) | ((v & 7) << 11);
  }

  /** ST(i) as a value (for tests and debuggers). */
  st(i: number): Ext80 {
    return this.regs[(this.top + i) & 7]!;
  }
  /** ST(i) as a JavaScript number (rounded to nearest), or undefined if the register is empty. */
  stNumber(i: number): number | undefined {
    const p = (this.top + i) & 7;
    return this.empty[p] ? undefined : this.math.toNumber(this.regs[p]!);
  }

  fninit(): void {
    this.cw = 0x037f;
    this.sw = 0;
    this.empty.fill(true);
    this.fop = 0;
    this.lastIp = 0;
    this.lastCs = 0;
    this.dp = 0;
    this.ds = 0;
  }

  // ---- stack and exceptions ----

  private tagOf(phys: number): number {
    if (this.empty[phys]) return TAG_EMPTY;
    const k = classify(this.regs[phys]!);
    if (k === Kind.Zero) return TAG_ZERO;
    if (k === Kind.Normal) return TAG_VALID;
    return TAG_SPECIAL;
  }

  private isEmpty(i: number): boolean {
    return this.empty[(this.top + i) & 7]!;
  }

  private setSt(i: number, v: Ext80): void {
    const p = (this.top + i) & 7;
    this.regs[p] = v;
    this.empty[p] = false;
  }

  private push(v: Ext80): void {
    this.top = this.top - 1;
    this.setSt(0, v);
  }

  private pop(): void {
    this.empty[this.top] = true;
    this.top = this.top + 1;
  }

  /**
   * Records exception flags; returns true when an unmasked IE, ZE or DE means the destination
   * must not be written (SDM vol. 1, 8.6).
   */
  private raise(flags: number): boolean {
    if (flags === 0) return false;
    this.sw |= flags & 0x7f;
    const unmasked = flags & ~this.cw & 0x3f;
    if (unmasked) this.sw |= Sw.ES | Sw.B;
    return (unmasked & (Sw.IE | Sw.ZE | Sw.DE)) !== 0;
  }

  private setC1(on: boolean): void {
    if (on) this.sw |= Sw.C1;
    else this.sw &= ~Sw.C1;
  }

  private setCc(cc: number): void {
    this.sw = (this.sw & ~(Sw.C0 | Sw.C1 | Sw.C2 | Sw.C3)) | cc;
  }

  /** Stack underflow (reading an empty register): IE|SF, C1=0. Returns true if suppressed. */
  private underflow(): boolean {
    this.setC1(false);
    return this.raise(Sw.IE | Sw.SF);
  }

  /** Stack overflow (pushing onto a full register): IE|SF, C1=1. Returns true if suppressed. */
  private overflow(): boolean {
    this.setC1(true);
    return this.raise(Sw.IE | Sw.SF);
  }

  private begin(): void {
    this.math.flags = 0;
    this.math.roundedUp = false;
    this.math.sourceDenormal = false;
    this.math.rc = ((this.cw >> 10) & 3) as Rc;
  }

  /** Applies the flags of the last computation; C1 = rounded up. Returns true if suppressed. */
  private finish(): boolean {
    this.setC1(this.math.roundedUp && (this.math.flags & Sw.PE) !== 0);
    return this.raise(this.math.flags);
  }

  private get precision() {
    return PRECISION[(this.cw >> 8) & 3]!;
  }

  /** Pushes a loaded value: overflow if ST(7) is in use (masked: pushes the indefinite). */
  private load(v: Ext80): void {
    if (!this.empty[(this.top - 1) & 7]) {
      if (this.overflow()) return;
      v = INDEFINITE;
    } else {
      this.setC1(false);
    }
    this.push(v);
  }

  /** FLD m32/m64: a stack overflow takes precedence over the conversion's IE/DE (hardware). */
  private loadConverted(v: Ext80): void {
    if (this.empty[(this.top - 1) & 7] && this.raise(this.math.flags)) return;
    this.load(v);
  }

  // ---- memory operand helpers ----

  private readExt(mem: FpuMemory, a: number): Ext80 {
    const lo = mem.readU32(a) >>> 0;
    const hi = mem.readU32(a + 4) >>> 0;
    const se = mem.readU16(a + 8);
    return new Ext80(se >> 15, se & 0x7fff, (BigInt(hi) << 32n) | BigInt(lo));
  }

  private writeExt(mem: FpuMemory, a: number, v: Ext80): void {
    mem.writeU32(a, Number(v.mant & 0xffffffffn));
    mem.writeU32(a + 4, Number(v.mant >> 32n));
    mem.writeU16(a + 8, (v.sign << 15) | v.exp);
  }

  private readInt(mem: FpuMemory, a: number, bytes: 2 | 4 | 8): bigint {
    if (bytes === 2) return BigInt((mem.readU16(a) << 16) >> 16);
    if (bytes === 4) return BigInt(mem.readU32(a) | 0);
    const lo = BigInt(mem.readU32(a) >>> 0);
    const hi = BigInt(mem.readU32(a + 4) | 0);
    return (hi << 32n) | lo;
  }

  private writeInt(mem: FpuMemory, a: number, bytes: 2 | 4 | 8, v: bigint): void {
    if (bytes === 2) mem.writeU16(a, Number(BigInt.asUintN(16, v)));
    else if (bytes === 4) mem.writeU32(a, Number(BigInt.asUintN(32, v)));
    else {
      const u = BigInt.asUintN(64, v);
      mem.writeU32(a, Number(u & 0xffffffffn));
      mem.writeU32(a + 4, Number(u >> 32n));
    }
  }

  /** Reads the memory operand of a D8/DA/DC/DE arithmetic instruction as an exact value. */
  private readArithOperand(opcode: number, mem: FpuMemory, a: number): Ext80 {
    switch (opcode) {
      case 0xd8:
        return this.math.fromIeee(mem.readU32(a), 0, SINGLE, true);
      case 0xdc:
        return this.math.fromIeee(mem.readU32(a), mem.readU32(a + 4), DOUBLE, true);
      case 0xda:
        return this.math.fromInt(this.readInt(mem, a, 4));
      default:
        return this.math.fromInt(this.readInt(mem, a, 2));
    }
  }

  // ---- the instruction ----

  execute(opcode: number, modrm: number, address: number, mem: FpuMemory, operandSize32: boolean): void {
    this.lastComiFlags = -1;
    this.lastAx = -1;
    const reg = (modrm >> 3) & 7;
    const rm = modrm & 7;
    if (modrm < 0xc0) {
      this.executeMemory(opcode, reg, address, mem, operandSize32);
      if (!isControl(opcode, reg)) {
        this.fop = ((opcode & 7) << 8) | modrm;
        this.dp = address >>> 0;
        this.lastIp = this.curIp;
        this.lastCs = this.curCs;
      }
    } else {
      this.executeRegister(opcode, modrm, reg, rm);
      if (!(opcode === 0xdb && modrm >= 0xe0 && modrm <= 0xe7) && !(opcode === 0xdf && modrm === 0xe0)) {
        this.fop = ((opcode & 7) << 8) | modrm;
        this.lastIp = this.curIp;
        this.lastCs = this.curCs;
      }
    }
  }

  private invalid(opcode: number, modrm: number): never {
    throw new FpuInvalidOpcode(
      "FPU_INVALID_OPCODE",
      `x87 opcode ${opcode.toString(16)} /${(modrm >> 3) & 7} (modrm 0x${modrm.toString(16)}) does not exist or is not implemented`,
      { opcode, modrm },
    );
  }

  private executeMemory(opcode: number, reg: number, a: number, mem: FpuMemory, op32: boolean): void {
    switch (opcode) {
      case 0xd8:
      case 0xdc:
      case 0xda:
      case 0xde: {
        this.begin();
        const v = this.readArithOperand(opcode, mem, a);
        if (reg === 2 || reg === 3) this.compareOp(v, reg === 3);
        else this.arith(reg, v);
        return;
      }
      case 0xd9:
        switch (reg) {
          case 0: {
            this.begin();
            this.loadConverted(this.math.fromIeee(mem.readU32(a), 0, SINGLE));
            return;
          }
          case 2:
          case 3:
            this.storeIeee(mem, a, SINGLE, reg === 3);
            return;
          case 4:
            this.loadEnv(mem, a, op32);
            return;
          case 5:
            this.cw = (mem.readU16(a) & 0x1f3f) | 0x40;
            this.recomputeEs();
            return;
          case 6:
            this.storeEnv(mem, a, op32);
            this.cw |= 0x3f;
            this.recomputeEs();
            return;
          case 7:
            mem.writeU16(a, this.cw);
            return;
          default:
            this.invalid(opcode, 0);
            return;
        }
      case 0xdb:
        switch (reg) {
          case 0:
            this.begin();
            this.load(this.math.fromInt(this.readInt(mem, a, 4)));
            return;
          case 2:
          case 3:
            this.storeInt(mem, a, 4, reg === 3);
            return;
          case 5: {
            const v = this.readExt(mem, a);
            this.begin();
            this.load(v);
            return;
          }
          case 7:
            if (this.isEmpty(0)) {
              if (this.underflow()) return;
              this.writeExt(mem, a, INDEFINITE);
            } else {
              this.writeExt(mem, a, this.st(0));
            }
            this.setC1(false);
            this.pop();
            return;
          default:
            this.invalid(opcode, reg << 3);
            return;
        }
      case 0xdd:
        switch (reg) {
          case 0: {
            this.begin();
            this.loadConverted(this.math.fromIeee(mem.readU32(a), mem.readU32(a + 4), DOUBLE));
            return;
          }
          case 2:
          case 3:
            this.storeIeee(mem, a, DOUBLE, reg === 3);
            return;
          case 4:
            this.frstor(mem, a, op32);
            return;
          case 6:
            this.fnsave(mem, a, op32);
            return;
          case 7:
            mem.writeU16(a, this.sw);
            return;
          default:
            this.invalid(opcode, reg << 3);
            return;
        }
      case 0xdf:
        switch (reg) {
          case 0:
            this.begin();
            this.load(this.math.fromInt(this.readInt(mem, a, 2)));
            return;
          case 2:
          case 3:
            this.storeInt(mem, a, 2, reg === 3);
            return;
          case 4:
            this.fbld(mem, a);
            return;
          case 5:
            this.begin();
            this.load(this.math.fromInt(this.readInt(mem, a, 8)));
            return;
          case 6:
            this.fbstp(mem, a);
            return;
          case 7:
            this.storeInt(mem, a, 8, true);
            return;
          default:
            this.invalid(opcode, reg << 3);
            return;
        }
      default:
        this.invalid(opcode, reg << 3);
        return;
    }
  }

  private executeRegister(opcode: number, modrm: number, reg: number, i: number): void {
    switch (opcode) {
      case 0xd8:
        // ST(0) <- ST(0) op ST(i); /2 /3 FCOM/FCOMP ST(i).
        this.begin();
        if (reg === 2 || reg === 3) this.compareSt(i, false, reg === 3 ? 1 : 0);
        else this.arithSt(reg, 0, i, false);
        return;
      case 0xdc:
        // ST(i) <- ST(i) op ST(0); /2 /3 are FCOM/FCOMP aliases.
        this.begin();
        if (reg === 2 || reg === 3) this.compareSt(i, false, reg === 3 ? 1 : 0);
        else this.arithSt(reg, i, i, false);
        return;
      case 0xde:
        this.begin();
        if (reg === 2) {
          this.compareSt(i, false, 1); // FCOMP alias
          return;
        }
        if (reg === 3) {
          if (i !== 1) {
            this.invalid(opcode, modrm);
            return;
          }
          this.compareSt(1, false, 2); // FCOMPP
          return;
        }
        this.arithSt(reg, i, i, true);
        return;
      case 0xd9:
        this.executeD9(modrm, reg, i);
        return;
      case 0xda:
        if (reg <= 3) {
          this.fcmov(reg, false, i);
          return;
        }
        if (modrm === 0xe9) {
          this.begin();
          this.compareSt(1, true, 2); // FUCOMPP
          return;
        }
        this.invalid(opcode, modrm);
        return;
      case 0xdb:
        if (reg <= 3) {
          this.fcmov(reg, true, i);
          return;
        }
        if (reg === 4) {
          if (modrm === 0xe2) {
            this.sw &= ~0x80ff; // FNCLEX: exception flags, SF, ES and B
            return;
          }
          if (modrm === 0xe3) {
            this.fninit();
            return;
          }
          if (modrm === 0xe0 || modrm === 0xe1 || modrm === 0xe4) return; // FENI FDISI FSETPM: no-ops
          this.invalid(opcode, modrm);
          return;
        }
        if (reg === 5 || reg === 6) {
          this.begin();
          this.comi(i, reg === 5, false);
          return;
        }
        this.invalid(opcode, modrm);
        return;
      case 0xdd:
        switch (reg) {
          case 0: // FFREE
            this.empty[(this.top + i) & 7] = true;
            return;
          case 1: // FXCH alias
            this.fxch(i);
            return;
          case 2:
          case 3: // FST / FSTP ST(i)
            this.fstSt(i, reg === 3);
            return;
          case 4:
          case 5:
            this.begin();
            this.compareSt(i, true, reg === 5 ? 1 : 0);
            return;
          default:
            this.invalid(opcode, modrm);
            return;
        }
      case 0xdf:
        switch (reg) {
          case 0: // FFREEP (undocumented, decoded by Intel and AMD parts)
            this.empty[(this.top + i) & 7] = true;
            this.pop();
            return;
          case 1:
            this.fxch(i);
            return;
          case 2:
          case 3:
            this.fstSt(i, true);
            return;
          case 4:
            if (modrm !== 0xe0) {
              this.invalid(opcode, modrm);
              return;
            }
            this.lastAx = this.sw;
            this.hooks.setAx?.(this.sw);
            return;
          case 5:
          case 6:
            this.begin();
            this.comi(i, reg === 5, true);
            return;
          default:
            this.invalid(opcode, modrm);
            return;
        }
      default:
        this.invalid(opcode, modrm);
        return;
    }
  }

  private executeD9(modrm: number, reg: number, i: number): void {
    switch (reg) {
      case 0: // FLD ST(i)
        if (this.isEmpty(i)) {
          if (this.underflow()) return;
          this.load(INDEFINITE);
          return;
        }
        this.load(this.st(i));
        return;
      case 1:
        this.fxch(i);
        return;
      case 2:
        if (modrm === 0xd0) return; // FNOP
        this.invalid(0xd9, modrm);
        return;
      case 3: // FSTP1 alias
        this.fstSt(i, true);
        return;
      default:
        break;
    }
    this.begin();
    switch (modrm) {
      case 0xe0: // FCHS
        this.unary((x) => negate(x), true);
        return;
      case 0xe1: // FABS
        this.unary((x) => abs(x), true);
        return;
      case 0xe4: // FTST
        if (this.isEmpty(0)) {
          this.underflow();
          this.setCc(Sw.C0 | Sw.C2 | Sw.C3);
          return;
        }
        this.setCompareCc(this.math.compare(this.st(0), ZERO, true));
        this.raise(this.math.flags);
        return;
      case 0xe5:
        this.fxam();
        return;
      case 0xe8:
        this.load(ONE);
        return;
      case 0xe9: // log2(10)
        this.load(this.constant(0xd49a784bcd1b8afen, 0x4000, false));
        return;
      case 0xea: // log2(e)
        this.load(this.constant(0xb8aa3b295c17f0bcn, 0x3fff, true));
        return;
      case 0xeb: // pi
        this.load(this.constant(0xc90fdaa22168c235n, 0x4000, true));
        return;
      case 0xec: // log10(2)
        this.load(this.constant(0x9a209a84fbcff799n, 0x3ffd, true));
        return;
      case 0xed: // ln(2)
        this.load(this.constant(0xb17217f7d1cf79acn, 0x3ffe, true));
        return;
      case 0xee:
        this.load(ZERO);
        return;
      case 0xf0: // F2XM1
        this.unary((x) => this.transcendental(x, (v) => Math.expm1(v * Math.LN2)), false);
        return;
      case 0xf1: // FYL2X: ST(1) <- ST(1) * log2(ST(0)), pop
        this.binaryPop((x, y) => this.fyl2x(x, y, false));
        return;
      case 0xf2:
        this.fptan();
        return;
      case 0xf3: // FPATAN: ST(1) <- atan2(ST(1), ST(0)), pop
        this.binaryPop((x, y) => this.fpatan(x, y));
        return;
      case 0xf4:
        this.fxtract();
        return;
      case 0xf5:
        this.fprem(true);
        return;
      case 0xf6:
        this.setC1(false);
        this.top = this.top - 1;
        return;
      case 0xf7:
        this.setC1(false);
        this.top = this.top + 1;
        return;
      case 0xf8:
        this.fprem(false);
        return;
      case 0xf9: // FYL2XP1
        this.binaryPop((x, y) => this.fyl2x(x, y, true));
        return;
      case 0xfa:
        this.unary((x) => this.math.sqrt(x, this.precision), false);
        return;
      case 0xfb:
        this.fsincos();
        return;
      case 0xfc:
        this.unary((x) => this.math.roundToIntegral(x), false);
        return;
      case 0xfd:
        this.fscale();
        return;
      case 0xfe:
        this.trig((v) => Math.sin(v));
        return;
      case 0xff:
        this.trig((v) => Math.cos(v));
        return;
      default:
        this.invalid(0xd9, modrm);
        return;
    }
  }

  // ---- instruction bodies ----

  /**
   * The constant ROM. Since the Pentium the constants honour the rounding control (SDM vol. 1,
   * 8.3.8): `sig` is the nearest 64-bit significand; `nearestIsUp` tells whether that rounded
   * up (then rounding down or toward zero gives sig - 1) or down (then rounding up gives sig + 1).
   */
  private constant(sig: bigint, exp: number, nearestIsUp: boolean): Ext80 {
    const rc = this.math.rc;
    if (nearestIsUp && (rc === 1 || rc === 3)) return new Ext80(0, exp, sig - 1n);
    if (!nearestIsUp && rc === 2) return new Ext80(0, exp, sig + 1n);
    return new Ext80(0, exp, sig);
  }

  private unary(f: (x: Ext80) => Ext80, exact: boolean): void {
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      this.setSt(0, INDEFINITE);
      return;
    }
    const r = f(this.st(0));
    if (exact) {
      this.setC1(false);
      this.setSt(0, r);
      return;
    }
    if (this.finish()) return;
    this.setSt(0, r);
  }

  /** ST(1) <- f(ST(0), ST(1)); pop. */
  private binaryPop(f: (x: Ext80, y: Ext80) => Ext80): void {
    if (this.isEmpty(0) || this.isEmpty(1)) {
      if (this.underflow()) return;
      this.setSt(1, INDEFINITE);
      this.pop();
      return;
    }
    const r = f(this.st(0), this.st(1));
    if (this.finish()) return;
    this.setSt(1, r);
    this.pop();
  }

  /** Operation `reg` (0 add, 1 mul, 4 sub, 5 subr, 6 div, 7 divr) on ST(0) and other. */
  private compute(reg: number, st0: Ext80, other: Ext80): Ext80 {
    const fmt = this.precision;
    switch (reg) {
      case 0:
        return this.math.add(st0, other, fmt);
      case 1:
        return this.math.mul(st0, other, fmt);
      case 4:
        return this.math.sub(st0, other, fmt);
      case 5:
        return this.math.sub(other, st0, fmt);
      case 6:
        return this.math.div(st0, other, fmt);
      default:
        return this.math.div(other, st0, fmt);
    }
  }

  /** Memory-operand arithmetic: ST(0) <- ST(0) op value. */
  private arith(reg: number, value: Ext80): void {
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      this.setSt(0, INDEFINITE);
      return;
    }
    const r = this.compute(reg, this.st(0), value);
    if (this.finish()) return;
    this.setSt(0, r);
  }

  /**
   * Register arithmetic. /4../7 always compute ST(0)-ST(i), ST(i)-ST(0), ST(0)/ST(i), ST(i)/ST(0)
   * in that order, whichever register is the destination (that is how FSUB/FSUBR swap names
   * between D8 and DC/DE).
   */
  private arithSt(reg: number, dest: number, i: number, pop: boolean): void {
    if (this.isEmpty(0) || this.isEmpty(i)) {
      if (this.underflow()) return;
      this.setSt(dest, INDEFINITE);
      if (pop) this.pop();
      return;
    }
    const r = this.compute(reg, this.st(0), this.st(i));
    if (this.finish()) return;
    this.setSt(dest, r);
    if (pop) this.pop();
  }

  private setCompareCc(c: number): void {
    // > : 000, < : C0, = : C3, unordered: C3 C2 C0 (C1 cleared).
    this.setCc(c === 0 ? Sw.C3 : c < 0 ? Sw.C0 : c === 1 ? 0 : Sw.C0 | Sw.C2 | Sw.C3);
  }

  /** FCOM/FCOMP/FICOM with a memory operand. */
  private compareOp(v: Ext80, pop: boolean): void {
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      this.setCc(Sw.C0 | Sw.C2 | Sw.C3);
    } else {
      this.setCompareCc(this.math.compare(this.st(0), v, true));
      if (this.raise(this.math.flags)) return;
    }
    if (pop) this.pop();
  }

  /** FCOM/FUCOM ST(i) with 0, 1 or 2 pops. */
  private compareSt(i: number, unordered: boolean, pops: number): void {
    if (this.isEmpty(0) || this.isEmpty(i)) {
      if (this.underflow()) return;
      this.setCc(Sw.C0 | Sw.C2 | Sw.C3);
    } else {
      this.setCompareCc(this.math.compare(this.st(0), this.st(i), !unordered));
      if (this.raise(this.math.flags)) return;
    }
    for (let k = 0; k < pops; k++) this.pop();
  }

  /** FCOMI/FUCOMI(P): result to EFLAGS ZF PF CF. */
  private comi(i: number, unordered: boolean, pop: boolean): void {
    let flags: number;
    this.setC1(false);
    if (this.isEmpty(0) || this.isEmpty(i)) {
      if (this.underflow()) return;
      flags = ZF | PF | CF;
    } else {
      const c = this.math.compare(this.st(0), this.st(i), !unordered);
      flags = c === 0 ? ZF : c < 0 ? CF : c === 1 ? 0 : ZF | PF | CF;
      // Even with the exception unmasked the hardware writes EFLAGS; it does not pop.
      const suppressed = this.raise(this.math.flags);
      this.lastComiFlags = flags;
      this.hooks.setComiFlags?.(flags);
      if (suppressed) return;
      if (pop) this.pop();
      return;
    }
    this.lastComiFlags = flags;
    this.hooks.setComiFlags?.(flags);
    if (pop) this.pop();
  }

  private fcmov(cond: number, negated: boolean, i: number): void {
    const fl = this.hooks.getEflags?.() ?? 0;
    let take: boolean;
    switch (cond) {
      case 0:
        take = (fl & CF) !== 0;
        break;
      case 1:
        take = (fl & ZF) !== 0;
        break;
      case 2:
        take = (fl & (CF | ZF)) !== 0;
        break;
      default:
        take = (fl & PF) !== 0;
    }
    if (negated) take = !take;
    if (this.isEmpty(0) || this.isEmpty(i)) {
      if (this.underflow()) return;
      if (take) this.setSt(0, INDEFINITE);
      return;
    }
    this.setC1(false);
    if (take) this.setSt(0, this.st(i));
  }

  private fxch(i: number): void {
    const e0 = this.isEmpty(0);
    const ei = this.isEmpty(i);
    let a = this.st(0);
    let b = this.st(i);
    if (e0 || ei) {
      if (this.underflow()) return;
      if (e0) a = INDEFINITE;
      if (ei) b = INDEFINITE;
    } else {
      this.setC1(false);
    }
    this.setSt(0, b);
    this.setSt(i, a);
  }

  private fstSt(i: number, pop: boolean): void {
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      this.setSt(i, INDEFINITE);
    } else {
      this.setC1(false);
      this.setSt(i, this.st(0));
    }
    if (pop) this.pop();
  }

  /** True when the pending flags include an unmasked IE, ZE or DE (nothing is stored). */
  private suppressed(): boolean {
    return (this.math.flags & ~this.cw & (Sw.IE | Sw.ZE | Sw.DE)) !== 0;
  }

  /** FST/FSTP m32/m64: memory is written before any state changes (a fault leaves it intact). */
  private storeIeee(mem: FpuMemory, a: number, fmt: typeof SINGLE, pop: boolean): void {
    this.begin();
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      const [lo, hi] = this.math.toIeee(INDEFINITE, fmt);
      mem.writeU32(a, lo);
      if (fmt !== SINGLE) mem.writeU32(a + 4, hi);
      this.pop();
      return;
    }
    const [lo, hi] = this.math.toIeee(this.st(0), fmt);
    if (this.suppressed()) {
      this.finish();
      return;
    }
    mem.writeU32(a, lo);
    if (fmt !== SINGLE) mem.writeU32(a + 4, hi);
    this.finish();
    if (pop) this.pop();
  }

  /** FIST/FISTP m16/m32/m64; out of range or NaN: IE, masked result the integer indefinite. */
  private storeInt(mem: FpuMemory, a: number, bytes: 2 | 4 | 8, pop: boolean): void {
    this.begin();
    const indefinite = -(1n << BigInt(bytes * 8 - 1));
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      this.writeInt(mem, a, bytes, indefinite);
      if (pop) this.pop();
      return;
    }
    let v = this.math.toInteger(this.st(0));
    if (v === null || v > -indefinite - 1n || v < indefinite) {
      this.math.flags = (this.math.flags & ~Sw.PE) | Sw.IE;
      this.math.roundedUp = false;
      v = indefinite;
    }
    if (this.suppressed()) {
      this.finish();
      return;
    }
    this.writeInt(mem, a, bytes, v);
    this.finish();
    if (pop) this.pop();
  }

  private fxam(): void {
    const v = this.st(0);
    const c1 = v.sign ? Sw.C1 : 0;
    if (this.isEmpty(0)) {
      this.setCc(Sw.C3 | Sw.C0 | c1);
      return;
    }
    let cc: number;
    switch (classify(v)) {
      case Kind.Unsupported:
        cc = 0;
        break;
      case Kind.QNaN:
      case Kind.SNaN:
        cc = Sw.C0;
        break;
      case Kind.Normal:
        cc = Sw.C2;
        break;
      case Kind.Infinity:
        cc = Sw.C2 | Sw.C0;
        break;
      case Kind.Zero:
        cc = Sw.C3;
        break;
      default:
        cc = Sw.C3 | Sw.C2;
    }
    this.setCc(cc | c1);
  }

  private fxtract(): void {
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      this.setSt(0, INDEFINITE);
      this.load(INDEFINITE);
      return;
    }
    if (!this.empty[(this.top - 1) & 7]) {
      if (this.overflow()) return;
      this.setSt(0, INDEFINITE);
      this.push(INDEFINITE);
      return;
    }
    const x = this.st(0);
    const k = classify(x);
    let e: Ext80;
    let s: Ext80;
    if (k === Kind.Zero) {
      this.math.flags |= Sw.ZE;
      e = infinity(1);
      s = x;
    } else if (k === Kind.Infinity) {
      e = infinity(0);
      s = x;
    } else if (isNaNKind(k) || k === Kind.Unsupported) {
      if (k !== Kind.QNaN) this.math.flags |= Sw.IE;
      e = k === Kind.Unsupported ? INDEFINITE : quiet(x);
      s = e;
    } else {
      if (k === Kind.Denormal) this.math.flags |= Sw.DE;
      const r = this.math.extract(x);
      e = r.exponent;
      s = r.significand;
    }
    if (this.finish()) return;
    this.setSt(0, e);
    this.push(s);
  }

  private fprem(ieee: boolean): void {
    if (this.isEmpty(0) || this.isEmpty(1)) {
      if (this.underflow()) return;
      this.setSt(0, INDEFINITE);
      return;
    }
    const r = this.math.remainder(this.st(0), this.st(1), ieee);
    if (this.raise(this.math.flags)) {
      this.sw &= ~Sw.C2; // unmasked exception: nothing stored, C2 cleared (as the hardware does)
      return;
    }
    if (r.cc >= 0) this.setCc(r.cc);
    else this.sw &= ~Sw.C2; // NaN/invalid: C2 cleared, C0 C1 C3 kept (as the hardware does)
    this.setSt(0, r.value);
  }

  private fscale(): void {
    if (this.isEmpty(0) || this.isEmpty(1)) {
      if (this.underflow()) return;
      this.setSt(0, INDEFINITE);
      return;
    }
    const r = this.math.scale(this.st(0), this.st(1));
    if (this.finish()) return;
    this.setSt(0, r);
  }

  /** A transcendental on a finite operand through a double (53-bit) computation. */
  private transcendental(x: Ext80, f: (v: number) => number): Ext80 {
    const k = classify(x);
    if (k === Kind.Unsupported) {
      this.math.flags |= Sw.IE;
      return INDEFINITE;
    }
    if (isNaNKind(k)) {
      if (k === Kind.SNaN) this.math.flags |= Sw.IE;
      return quiet(x);
    }
    if (k === Kind.Denormal) this.math.flags |= Sw.DE;
    const r = f(this.math.toNumber(x));
    if (Number.isNaN(r)) {
      this.math.flags |= Sw.IE;
      return INDEFINITE;
    }
    const out = this.math.fromNumber(r);
    if (classify(out) !== Kind.Zero || k !== Kind.Zero) this.math.flags |= Sw.PE;
    if (k === Kind.Zero) return x;
    return out;
  }

  private fyl2x(x: Ext80, y: Ext80, plus1: boolean): Ext80 {
    const kx = classify(x);
    const ky = classify(y);
    if (isNaNKind(kx) || isNaNKind(ky) || kx === Kind.Unsupported || ky === Kind.Unsupported) {
      return this.math.add(x, y, EXTENDED);
    }
    const vx = this.math.toNumber(x);
    const vy = this.math.toNumber(y);
    if (!plus1 && vx === 0 && vy !== 0 && Number.isFinite(vy)) {
      this.math.flags |= Sw.ZE;
      return infinity(y.sign ^ 1);
    }
    const l = plus1 ? Math.log1p(vx) / Math.LN2 : Math.log2(vx);
    const r = vy * l;
    if (Number.isNaN(r) || (!plus1 && vx < 0)) {
      this.math.flags |= Sw.IE;
      return INDEFINITE;
    }
    if (r !== 0 || !Number.isFinite(l)) this.math.flags |= Sw.PE;
    return this.math.fromNumber(r);
  }

  private fpatan(x: Ext80, y: Ext80): Ext80 {
    const kx = classify(x);
    const ky = classify(y);
    if (isNaNKind(kx) || isNaNKind(ky) || kx === Kind.Unsupported || ky === Kind.Unsupported) {
      return this.math.add(x, y, EXTENDED);
    }
    const r = Math.atan2(this.math.toNumber(y), this.math.toNumber(x));
    if (r !== 0) this.math.flags |= Sw.PE;
    // atan2 keeps the sign of a zero y.
    return r === 0 ? zero(y.sign) : this.math.fromNumber(r);
  }

  /** FSIN/FCOS: |x| >= 2^63 leaves ST(0) and sets C2 (SDM vol. 2, FSIN). */
  private trig(f: (v: number) => number): void {
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      this.setSt(0, INDEFINITE);
      return;
    }
    const x = this.st(0);
    if (this.outOfTrigRange(x)) {
      this.sw |= Sw.C2;
      return;
    }
    this.sw &= ~Sw.C2;
    const r = this.transcendental(x, f);
    if (this.finish()) return;
    this.setSt(0, r);
  }

  private outOfTrigRange(x: Ext80): boolean {
    const k = classify(x);
    return (k === Kind.Normal || k === Kind.Unsupported) && x.exp >= BIAS + 63 && x.exp !== EXP_MAX;
  }

  /**
   * The checks FPTAN and FSINCOS share (both replace ST(0) and push a second result): an empty
   * ST(0) or a full ST(7) leaves the indefinite pair (when the stack fault is masked); an operand
   * outside the trig range sets C2 and leaves the stack alone. Returns the operand, or undefined
   * when the instruction is already complete.
   */
  private twoResultTrigOperand(): Ext80 | undefined {
    if (this.isEmpty(0)) {
      if (this.underflow()) return undefined;
      this.setSt(0, INDEFINITE);
      this.load(INDEFINITE);
      return undefined;
    }
    if (!this.empty[(this.top - 1) & 7]) {
      if (this.overflow()) return undefined;
      this.setSt(0, INDEFINITE);
      this.push(INDEFINITE);
      return undefined;
    }
    const x = this.st(0);
    if (this.outOfTrigRange(x)) {
      this.sw |= Sw.C2;
      return undefined;
    }
    this.sw &= ~Sw.C2;
    return x;
  }

  private fptan(): void {
    const x = this.twoResultTrigOperand();
    if (x === undefined) return;
    const r = this.transcendental(x, (v) => Math.tan(v));
    if (this.finish()) return;
    this.setSt(0, r);
    if (isNaNKind(classify(r))) this.push(r);
    else this.push(ONE);
  }

  private fsincos(): void {
    const x = this.twoResultTrigOperand();
    if (x === undefined) return;
    const s = this.transcendental(x, (v) => Math.sin(v));
    const c = classify(x) === Kind.Zero ? ONE : this.transcendental(x, (v) => Math.cos(v));
    if (this.finish()) return;
    this.setSt(0, s);
    this.push(c);
  }

  private fbld(mem: FpuMemory, a: number): void {
    const bytes: number[] = [];
    for (let k = 0; k < 10; k++) bytes.push(mem.readU8(a + k));
    let v = 0n;
    for (let k = 8; k >= 0; k--) {
      const b = bytes[k]!;
      v = v * 100n + BigInt((b >> 4) * 10 + (b & 15));
    }
    this.begin();
    const r = this.math.fromInt(v);
    this.load((bytes[9]! & 0x80) !== 0 ? negate(r) : r);
  }

  private fbstp(mem: FpuMemory, a: number): void {
    this.begin();
    const out = new Array<number>(10).fill(0);
    let v: bigint | null;
    let sign = 0;
    if (this.isEmpty(0)) {
      if (this.underflow()) return;
      v = null;
    } else {
      sign = this.st(0).sign;
      v = this.math.toInteger(this.st(0));
      if (v !== null && (v > 999999999999999999n || v < -999999999999999999n)) v = null;
    }
    if (v === null) {
      if (!this.isEmpty(0)) {
        this.math.flags = Sw.IE;
        if (this.raise(Sw.IE)) return;
      }
      // BCD indefinite (SDM vol. 1, 4.7).
      out[7] = 0xc0;
      out[8] = 0xff;
      out[9] = 0xff;
    } else {
      let u = v < 0n ? -v : v;
      for (let k = 0; k < 9; k++) {
        const lo = Number(u % 10n);
        u /= 10n;
        const hi = Number(u % 10n);
        u /= 10n;
        out[k] = (hi << 4) | lo;
      }
      out[9] = sign ? 0x80 : 0;
    }
    for (let k = 0; k < 10; k++) mem.writeU8(a + k, out[k]!);
    if (v !== null) this.finish();
    this.pop();
  }

  // ---- environment and state images ----

  private recomputeEs(): void {
    if (this.sw & ~this.cw & 0x3f) this.sw |= Sw.ES | Sw.B;
    else this.sw &= ~(Sw.ES | Sw.B);
  }

  /** FNSTENV image (protected mode, SDM vol. 1, figures 8-9 and 8-10). */
  private storeEnv(mem: FpuMemory, a: number, op32: boolean): void {
    if (op32) {
      mem.writeU32(a, 0xffff0000 | this.cw);
      mem.writeU32(a + 4, 0xffff0000 | this.sw);
      mem.writeU32(a + 8, 0xffff0000 | this.tagWord);
      mem.writeU32(a + 12, this.lastIp >>> 0);
      mem.writeU32(a + 16, ((this.fop & 0x7ff) << 16) | (this.lastCs & 0xffff));
      mem.writeU32(a + 20, this.dp >>> 0);
      mem.writeU32(a + 24, 0xffff0000 | (this.ds & 0xffff));
    } else {
      mem.writeU16(a, this.cw);
      mem.writeU16(a + 2, this.sw);
      mem.writeU16(a + 4, this.tagWord);
      mem.writeU16(a + 6, this.lastIp & 0xffff);
      mem.writeU16(a + 8, this.lastCs & 0xffff);
      mem.writeU16(a + 10, this.dp & 0xffff);
      mem.writeU16(a + 12, this.ds & 0xffff);
    }
  }

  /** Reads an environment image; returns the values without applying them (fault safety). */
  private readEnv(mem: FpuMemory, a: number, op32: boolean) {
    if (op32) {
      const cs = mem.readU32(a + 16);
      return {
        cw: mem.readU16(a),
        sw: mem.readU16(a + 4),
        tw: mem.readU16(a + 8),
        ip: mem.readU32(a + 12),
        cs: cs & 0xffff,
        fop: (cs >>> 16) & 0x7ff,
        dp: mem.readU32(a + 20),
        ds: mem.readU16(a + 24),
      };
    }
    return {
      cw: mem.readU16(a),
      sw: mem.readU16(a + 2),
      tw: mem.readU16(a + 4),
      ip: mem.readU16(a + 6),
      cs: mem.readU16(a + 8),
      fop: this.fop,
      dp: mem.readU16(a + 10),
      ds: mem.readU16(a + 12),
    };
  }

  private applyEnv(e: ReturnType<Fpu["readEnv"]>): void {
    this.cw = (e.cw & 0x1f3f) | 0x40;
    this.sw = e.sw;
    for (let i = 0; i < 8; i++) this.empty[i] = ((e.tw >> (2 * i)) & 3) === TAG_EMPTY;
    this.lastIp = e.ip;
    this.lastCs = e.cs;
    this.fop = e.fop;
    this.dp = e.dp;
    this.ds = e.ds;
    this.recomputeEs();
  }

  private loadEnv(mem: FpuMemory, a: number, op32: boolean): void {
    this.applyEnv(this.readEnv(mem, a, op32));
  }

  private fnsave(mem: FpuMemory, a: number, op32: boolean): void {
    this.storeEnv(mem, a, op32);
    const base = a + (op32 ? 28 : 14);
    for (let i = 0; i < 8; i++) this.writeExt(mem, base + 10 * i, this.st(i));
    this.fninit();
  }

  private frstor(mem: FpuMemory, a: number, op32: boolean): void {
    const env = this.readEnv(mem, a, op32);
    const base = a + (op32 ? 28 : 14);
    const values: Ext80[] = [];
    for (let i = 0; i < 8; i++) values.push(this.readExt(mem, base + 10 * i));
    this.applyEnv(env);
    for (let i = 0; i < 8; i++) this.regs[(this.top + i) & 7] = values[i]!;
  }

  /** FXSAVE: the 512-byte image (SDM vol. 2, FXSAVE, table 3-53, 32-bit layout). */
  fxsave(address: number, mem: FpuMemory): void {
    const a = address;
    let ftw = 0;
    for (let i = 0; i < 8; i++) if (!this.empty[i]) ftw |= 1 << i;
    mem.writeU32(a, this.cw | (this.sw << 16));
    mem.writeU32(a + 4, ftw | (this.fop << 16));
    mem.writeU32(a + 8, this.lastIp >>> 0);
    mem.writeU32(a + 12, this.lastCs & 0xffff);
    mem.writeU32(a + 16, this.dp >>> 0);
    mem.writeU32(a + 20, this.ds & 0xffff);
    mem.writeU32(a + 24, this.mxcsr >>> 0);
    mem.writeU32(a + 28, 0x0000ffbf);
    for (let i = 0; i < 8; i++) {
      const r = a + 32 + 16 * i;
      this.writeExt(mem, r, this.st(i));
      mem.writeU16(r + 10, 0);
      mem.writeU32(r + 12, 0);
    }
  }

  fxrstor(address: number, mem: FpuMemory): void {
    const a = address;
    const w0 = mem.readU32(a);
    const w1 = mem.readU32(a + 4);
    const ip = mem.readU32(a + 8);
    const cs = mem.readU16(a + 12);
    const dp = mem.readU32(a + 16);
    const ds = mem.readU16(a + 20);
    const mxcsr = mem.readU32(a + 24);
    const values: Ext80[] = [];
    for (let i = 0; i < 8; i++) values.push(this.readExt(mem, a + 32 + 16 * i));
    this.cw = (w0 & 0x1f3f) | 0x40;
    this.sw = (w0 >>> 16) & 0xffff;
    for (let i = 0; i < 8; i++) this.empty[i] = ((w1 >> i) & 1) === 0;
    this.fop = (w1 >>> 16) & 0x7ff;
    this.lastIp = ip;
    this.lastCs = cs;
    this.dp = dp;
    this.ds = ds;
    this.mxcsr = mxcsr & 0xffbf;
    for (let i = 0; i < 8; i++) this.regs[(this.top + i) & 7] = values[i]!;
    this.recomputeEs();
  }
}

/** Control instructions leave FOP and the data pointer alone (SDM vol. 1, 8.1.8). */
function isControl(opcode: number, reg: number): boolean {
  return (opcode === 0xd9 && reg >= 4) || (opcode === 0xdd && reg >= 4);
}
