/**
 * The x87 double-extended value (Intel SDM vol. 1, 4.2.2 and 8.2): sign, 15-bit biased exponent
 * and a 64-bit significand with an explicit integer bit (J, bit 63), and exact arithmetic on it.
 *
 * Registers hold this format exactly, so FLD/FSTP m80, FXCH, FILD/FISTP m64, FNSAVE/FRSTOR and
 * FXSAVE/FXRSTOR are bit-exact, and the basic operations (add, subtract, multiply, divide, square
 * root, compare, round to integer, scale, remainder, conversions) are computed exactly with BigInt
 * and rounded once, to the precision control (24, 53 or 64 bits) and the rounding control of the
 * control word, as the hardware does. Only the transcendental instructions (F2XM1, FYL2X(P1),
 * FPTAN, FPATAN, FSIN, FCOS, FSINCOS) go through a JavaScript double: their argument is rounded to
 * 53 bits and their result carries 53 bits, not 64 (documented limit).
 *
 * The FPU is rare on the hot path (the kernel saves and restores state; user code may do some
 * floating point), so clarity wins over speed here: values are small immutable objects.
 */

/** Exception and condition bits of the status word (SDM vol. 1, 8.1.3). */
export const enum Sw {
  IE = 0x0001,
  DE = 0x0002,
  ZE = 0x0004,
  OE = 0x0008,
  UE = 0x0010,
  PE = 0x0020,
  SF = 0x0040,
  ES = 0x0080,
  C0 = 0x0100,
  C1 = 0x0200,
  C2 = 0x0400,
  C3 = 0x4000,
  B = 0x8000,
}

/** Rounding control values (control word bits 10-11). */
export const enum Rc {
  Nearest = 0,
  Down = 1,
  Up = 2,
  Zero = 3,
}

export const BIAS = 16383;
export const EXP_MAX = 0x7fff;
const J = 1n << 63n;
const QUIET = 1n << 62n;
const MASK64 = (1n << 64n) - 1n;

/** One 80-bit value. Immutable. */
export class Ext80 {
  constructor(
    readonly sign: number,
    readonly exp: number,
    readonly mant: bigint,
  ) {}
}

export const enum Kind {
  Zero = 0,
  Normal = 1,
  Denormal = 2,
  Infinity = 3,
  QNaN = 4,
  SNaN = 5,
  /** Unnormals, pseudo-NaNs, pseudo-infinities: invalid operands since the 387. */
  Unsupported = 6,
}

export function classify(x: Ext80): Kind {
  if (x.exp === 0) return x.mant === 0n ? Kind.Zero : Kind.Denormal;
  if (x.exp === EXP_MAX) {
    if ((x.mant & J) === 0n) return Kind.Unsupported;
    if ((x.mant & ~J & MASK64) === 0n) return Kind.Infinity;
    return (x.mant & QUIET) !== 0n ? Kind.QNaN : Kind.SNaN;
  }
  return (x.mant & J) !== 0n ? Kind.Normal : Kind.Unsupported;
}

export function isNaNKind(k: Kind): boolean {
  return k === Kind.QNaN || k === Kind.SNaN;
}

export const ZERO = new Ext80(0, 0, 0n);
export const NEG_ZERO = new Ext80(1, 0, 0n);
export const ONE = new Ext80(0, BIAS, J);
/** The "real indefinite" QNaN that masked invalid operations return (SDM vol. 1, 4.8.3.7). */
export const INDEFINITE = new Ext80(1, EXP_MAX, 0xc000000000000000n);

export function zero(sign: number): Ext80 {
  return sign ? NEG_ZERO : ZERO;
}
export function infinity(sign: number): Ext80 {
  return new Ext80(sign, EXP_MAX, J);
}
export function quiet(x: Ext80): Ext80 {
  return new Ext80(x.sign, x.exp, x.mant | QUIET);
}
export function negate(x: Ext80): Ext80 {
  return new Ext80(x.sign ^ 1, x.exp, x.mant);
}
export function abs(x: Ext80): Ext80 {
  return x.sign ? new Ext80(0, x.exp, x.mant) : x;
}

export function bitLength(v: bigint): number {
  if (v === 0n) return 0;
  let n = 0;
  while (v > 0xffffffffn) {
    v >>= 32n;
    n += 32;
  }
  return n + 32 - Math.clz32(Number(v));
}

/** A rounding target: significand bits (with the leading one) and normal exponent range. */
export interface Format {
  readonly p: number;
  readonly emin: number;
  readonly emax: number;
}
export const EXTENDED: Format = { p: 64, emin: -16382, emax: 16383 };
export const DOUBLE: Format = { p: 53, emin: -1022, emax: 1023 };
export const SINGLE: Format = { p: 24, emin: -126, emax: 127 };
/** Register formats for the precision control field (control word bits 8-9; 1 is reserved). */
export const PRECISION: readonly Format[] = [
  { p: 24, emin: EXTENDED.emin, emax: EXTENDED.emax },
  { p: 64, emin: EXTENDED.emin, emax: EXTENDED.emax },
  { p: 53, emin: EXTENDED.emin, emax: EXTENDED.emax },
  EXTENDED,
];

/** A finite nonzero value sig * 2^q with sig normalized to exactly 64 bits. */
interface Unpacked {
  sign: number;
  sig: bigint;
  q: number;
}

function unpack(x: Ext80): Unpacked {
  const e = x.exp === 0 ? 1 : x.exp;
  let sig = x.mant;
  let q = e - BIAS - 63;
  const n = bitLength(sig);
  if (n < 64) {
    sig <<= BigInt(64 - n);
    q -= 64 - n;
  }
  return { sign: x.sign, sig, q };
}

/**
 * The arithmetic unit: every operation returns its result and accumulates status flags in
 * `flags` (IE DE ZE OE UE PE) and `roundedUp` (C1 after an inexact result, SDM vol. 1, 8.1.3.1).
 * The caller clears them before an instruction and applies them after.
 */
export class Ext80Math {
  flags = 0;
  roundedUp = false;
  rc: Rc = Rc.Nearest;
  /** The memory operand was a denormal m32/m64 (normal once extended): counts for DE. */
  sourceDenormal = false;

  /**
   * Rounds the exact value (-1)^sign * sig * 2^q to `fmt` with the current rounding control.
   * Returns the rounded significand and the exponent of its last bit, or null for an infinity.
   */
  private round(
    sign: number,
    sig: bigint,
    q: number,
    fmt: Format,
    rc: Rc,
  ): { sig: bigint; lsb: number } | null {
    const n = bitLength(sig);
    const e = q + n - 1;
    const tiny = e < fmt.emin;
    let lsb = tiny ? fmt.emin - (fmt.p - 1) : e - (fmt.p - 1);
    const shift = lsb - q;
    let rounded: bigint;
    let inexact = false;
    if (shift <= 0) {
      rounded = sig << BigInt(-shift);
    } else {
      const s = BigInt(shift);
      rounded = sig >> s;
      const rem = sig & ((1n << s) - 1n);
      if (rem !== 0n) {
        inexact = true;
        const half = 1n << (s - 1n);
        let up: boolean;
        switch (rc) {
          case Rc.Nearest:
            up = rem > half || (rem === half && (rounded & 1n) === 1n);
            break;
          case Rc.Down:
            up = sign === 1;
            break;
          case Rc.Up:
            up = sign === 0;
            break;
          default:
            up = false;
        }
        if (up) {
          rounded += 1n;
          this.roundedUp = true;
          if (rounded === 1n << BigInt(fmt.p)) {
            rounded >>= 1n;
            lsb += 1;
          }
        }
      }
    }
    if (inexact) this.flags |= Sw.PE;
    if (tiny && inexact) this.flags |= Sw.UE;
    if (rounded !== 0n && lsb + bitLength(rounded) - 1 > fmt.emax) {
      this.flags |= Sw.OE | Sw.PE;
      const toInf = rc === Rc.Nearest || (rc === Rc.Up && sign === 0) || (rc === Rc.Down && sign === 1);
      if (toInf) {
        this.roundedUp = true;
        return null;
      }
      this.roundedUp = false;
      return { sig: (1n << BigInt(fmt.p)) - 1n, lsb: fmt.emax - fmt.p + 1 };
    }
    return { sig: rounded, lsb };
  }

  /** Rounds an exact value to an 80-bit register value of precision `fmt`. */
  roundExt(sign: number, sig: bigint, q: number, fmt: Format): Ext80 {
    if (sig === 0n) return zero(sign);
    const r = this.round(sign, sig, q, fmt, this.rc);
    if (r === null) return infinity(sign);
    if (r.sig === 0n) return zero(sign);
    const n = bitLength(r.sig);
    const e = r.lsb + n - 1;
    if (e >= EXTENDED.emin) return new Ext80(sign, e + BIAS, r.sig << BigInt(64 - n));
    return new Ext80(sign, 0, r.sig << BigInt(r.lsb - (EXTENDED.emin - 63)));
  }

  // ---- conversions to and from memory formats ----

  /** Packs to IEEE single or double bits: returns [low32, high32] (high32 is 0 for single). */
  toIeee(x: Ext80, fmt: Format): [number, number] {
    const fracBits = fmt.p - 1;
    const expBits = fmt === SINGLE ? 8 : 11;
    const expAll = (1 << expBits) - 1;
    const bias = fmt.emax;
    const k = classify(x);
    let bits: bigint;
    const signBit = BigInt(x.sign) << BigInt(fracBits + expBits);
    switch (k) {
      case Kind.Zero:
        bits = signBit;
        break;
      case Kind.Infinity:
        bits = signBit | (BigInt(expAll) << BigInt(fracBits));
        break;
      case Kind.SNaN:
      case Kind.QNaN:
        if (k === Kind.SNaN) this.flags |= Sw.IE;
        bits =
          signBit |
          (BigInt(expAll) << BigInt(fracBits)) |
          (((x.mant | QUIET) & ~J & MASK64) >> BigInt(63 - fracBits));
        break;
      case Kind.Unsupported:
        this.flags |= Sw.IE;
        return this.toIeee(INDEFINITE, fmt);
      default: {
        // No DE here: FST/FSTP list #IS #IA #U #O #P only (SDM vol. 2), as the hardware does.
        const u = unpack(x);
        const r = this.round(u.sign, u.sig, u.q, fmt, this.rc);
        if (r === null) bits = signBit | (BigInt(expAll) << BigInt(fracBits));
        else if (r.sig === 0n) bits = signBit;
        else {
          const n = bitLength(r.sig);
          const e = r.lsb + n - 1;
          if (e >= fmt.emin) {
            const frac = (r.sig << BigInt(fmt.p - n)) & ((1n << BigInt(fracBits)) - 1n);
            bits = signBit | (BigInt(e + bias) << BigInt(fracBits)) | frac;
          } else {
            bits = signBit | (r.sig << BigInt(r.lsb - (fmt.emin - fracBits)));
          }
        }
      }
    }
    return [Number(bits & 0xffffffffn), Number(bits >> 32n)];
  }

  /**
   * Unpacks IEEE single (hi ignored) or double bits exactly. A denormal raises DE. An SNaN raises
   * IE and loads quieted (FLD), or with `operand` stays signaling for the arithmetic to handle
   * (memory operands of FADD & co: the NaN rules treat it as an SNaN, as the hardware does), and
   * a denormal sets `sourceDenormal` instead of DE (the operation decides whether DE is raised).
   */
  fromIeee(lo: number, hi: number, fmt: Format, operand = false): Ext80 {
    const fracBits = fmt.p - 1;
    const expBits = fmt === SINGLE ? 8 : 11;
    const bits = fmt === SINGLE ? BigInt(lo >>> 0) : (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    const sign = Number((bits >> BigInt(fracBits + expBits)) & 1n);
    const e = Number((bits >> BigInt(fracBits)) & BigInt((1 << expBits) - 1));
    const frac = bits & ((1n << BigInt(fracBits)) - 1n);
    if (e === (1 << expBits) - 1) {
      if (frac === 0n) return infinity(sign);
      const mant = J | (frac << BigInt(63 - fracBits));
      if ((mant & QUIET) === 0n && !operand) {
        this.flags |= Sw.IE;
        return new Ext80(sign, EXP_MAX, mant | QUIET);
      }
      return new Ext80(sign, EXP_MAX, mant);
    }
    if (e === 0) {
      if (frac === 0n) return zero(sign);
      if (operand) this.sourceDenormal = true;
      else this.flags |= Sw.DE;
      return this.exact(sign, frac, fmt.emin - fracBits);
    }
    return new Ext80(sign, e - fmt.emax + BIAS, J | (frac << BigInt(63 - fracBits)));
  }

  /** An exactly representable value (sig up to 64 bits, exponent in range) as Ext80. */
  exact(sign: number, sig: bigint, q: number): Ext80 {
    if (sig === 0n) return zero(sign);
    const n = bitLength(sig);
    return new Ext80(sign, q + n - 1 + BIAS, sig << BigInt(64 - n));
  }

  fromInt(v: bigint): Ext80 {
    if (v === 0n) return ZERO;
    return v < 0n ? this.exact(1, -v, 0) : this.exact(0, v, 0);
  }

  /**
   * Rounds to an integer with the rounding control (FIST, FRNDINT). Returns null for NaN,
   * infinity and unsupported values (the caller raises IE). Sets PE when inexact.
   */
  toInteger(x: Ext80, rc: Rc = this.rc): bigint | null {
    const k = classify(x);
    if (k === Kind.Zero) return 0n;
    if (k !== Kind.Normal && k !== Kind.Denormal) return null;
    // No DE: FIST/FISTP/FBSTP list #IS #IA #P only (SDM vol. 2); FRNDINT adds it itself.
    const u = unpack(x);
    let v: bigint;
    if (u.q >= 0) v = u.sig << BigInt(u.q);
    else {
      const s = -u.q;
      if (s > 66) {
        // |x| < 2^-2: the integer part is 0; the fraction decides the rounding.
        v = 0n;
        this.flags |= Sw.PE;
        if ((rc === Rc.Up && u.sign === 0) || (rc === Rc.Down && u.sign === 1)) {
          v = 1n;
          this.roundedUp = true;
        }
        return u.sign ? -v : v;
      }
      const bs = BigInt(s);
      v = u.sig >> bs;
      const rem = u.sig & ((1n << bs) - 1n);
      if (rem !== 0n) {
        this.flags |= Sw.PE;
        const half = 1n << (bs - 1n);
        let up = false;
        if (rc === Rc.Nearest) up = rem > half || (rem === half && (v & 1n) === 1n);
        else if (rc === Rc.Up) up = u.sign === 0;
        else if (rc === Rc.Down) up = u.sign === 1;
        if (up) {
          v += 1n;
          this.roundedUp = true;
        }
      }
    }
    return u.sign ? -v : v;
  }

  /** To a JavaScript number, rounded to nearest (transcendental arguments). */
  toNumber(x: Ext80): number {
    const saved = this.flags;
    const savedRc = this.rc;
    const savedUp = this.roundedUp;
    this.rc = Rc.Nearest;
    const [lo, hi] = this.toIeee(x, DOUBLE);
    this.rc = savedRc;
    this.flags = saved;
    this.roundedUp = savedUp;
    scratch.setUint32(0, lo, true);
    scratch.setUint32(4, hi, true);
    return scratch.getFloat64(0, true);
  }

  /** From a JavaScript number, exactly. */
  fromNumber(v: number): Ext80 {
    scratch.setFloat64(0, v, true);
    const saved = this.flags;
    const r = this.fromIeee(scratch.getUint32(0, true), scratch.getUint32(4, true), DOUBLE);
    this.flags = saved;
    return r;
  }

  // ---- arithmetic ----

  /**
   * NaN and unsupported-operand handling shared by the two-operand operations (SDM vol. 1,
   * table 4-7): returns the result if either operand is a NaN or unsupported, else null.
   */
  private nanOperands(a: Ext80, b: Ext80, ka: Kind, kb: Kind): Ext80 | null {
    if (ka === Kind.Unsupported || kb === Kind.Unsupported) {
      this.flags |= Sw.IE;
      return INDEFINITE;
    }
    const an = isNaNKind(ka);
    const bn = isNaNKind(kb);
    if (!an && !bn) return null;
    if (ka === Kind.SNaN || kb === Kind.SNaN) this.flags |= Sw.IE;
    if (an && bn) {
      if (ka === Kind.QNaN && kb === Kind.SNaN) return a;
      if (kb === Kind.QNaN && ka === Kind.SNaN) return b;
      const am = a.mant & ~J & MASK64;
      const bm = b.mant & ~J & MASK64;
      if (am === bm) return quiet(a.sign <= b.sign ? a : b);
      return quiet(am > bm ? a : b);
    }
    return quiet(an ? a : b);
  }

  private denormalCheck(ka: Kind, kb: Kind): void {
    if (ka === Kind.Denormal || kb === Kind.Denormal || this.sourceDenormal) this.flags |= Sw.DE;
  }

  add(a: Ext80, b: Ext80, fmt: Format): Ext80 {
    const ka = classify(a);
    const kb = classify(b);
    const n = this.nanOperands(a, b, ka, kb);
    if (n) return n;
    // Denormal operands raise DE whatever the other operand is (infinities included, as the hardware does).
    this.denormalCheck(ka, kb);
    if (ka === Kind.Infinity || kb === Kind.Infinity) {
      if (ka === Kind.Infinity && kb === Kind.Infinity && a.sign !== b.sign) {
        this.flags |= Sw.IE;
        return INDEFINITE;
      }
      return ka === Kind.Infinity ? a : b;
    }
    if (ka === Kind.Zero && kb === Kind.Zero) {
      return a.sign === b.sign ? a : zero(this.rc === Rc.Down ? 1 : 0);
    }
    if (ka === Kind.Zero) return this.roundExt(b.sign, unpack(b).sig, unpack(b).q, fmt);
    if (kb === Kind.Zero) return this.roundExt(a.sign, unpack(a).sig, unpack(a).q, fmt);
    const ua = unpack(a);
    const ub = unpack(b);
    // A far smaller operand only matters as a sticky bit below every rounding position.
    if (ua.q - ub.q > 200) {
      ub.sig = 1n;
      ub.q = ua.q - 200;
    } else if (ub.q - ua.q > 200) {
      ua.sig = 1n;
      ua.q = ub.q - 200;
    }
    const q = Math.min(ua.q, ub.q);
    const sa = ua.sig << BigInt(ua.q - q);
    const sb = ub.sig << BigInt(ub.q - q);
    let sum = (ua.sign ? -sa : sa) + (ub.sign ? -sb : sb);
    if (sum === 0n) return zero(this.rc === Rc.Down ? 1 : 0);
    let sign = 0;
    if (sum < 0n) {
      sign = 1;
      sum = -sum;
    }
    return this.roundExt(sign, sum, q, fmt);
  }

  sub(a: Ext80, b: Ext80, fmt: Format): Ext80 {
    const kb = classify(b);
    // Negating a NaN operand would change which NaN propagates with its sign; keep NaNs as they are.
    return this.add(a, isNaNKind(kb) || kb === Kind.Unsupported ? b : negate(b), fmt);
  }

  mul(a: Ext80, b: Ext80, fmt: Format): Ext80 {
    const ka = classify(a);
    const kb = classify(b);
    const n = this.nanOperands(a, b, ka, kb);
    if (n) return n;
    // Denormal operands raise DE whatever the other operand is (infinities included, as the hardware does).
    this.denormalCheck(ka, kb);
    const sign = a.sign ^ b.sign;
    if (ka === Kind.Infinity || kb === Kind.Infinity) {
      if (ka === Kind.Zero || kb === Kind.Zero) {
        this.flags |= Sw.IE;
        return INDEFINITE;
      }
      return infinity(sign);
    }
    if (ka === Kind.Zero || kb === Kind.Zero) return zero(sign);
    const ua = unpack(a);
    const ub = unpack(b);
    return this.roundExt(sign, ua.sig * ub.sig, ua.q + ub.q, fmt);
  }

  div(a: Ext80, b: Ext80, fmt: Format): Ext80 {
    const ka = classify(a);
    const kb = classify(b);
    const n = this.nanOperands(a, b, ka, kb);
    if (n) return n;
    const sign = a.sign ^ b.sign;
    // Division by zero wins over the denormal-operand check (x/0 raises ZE alone on hardware;
    // infinity/0 is an exact infinity; 0/0 is invalid).
    if (kb === Kind.Zero) {
      if (ka === Kind.Zero) {
        this.flags |= Sw.IE;
        return INDEFINITE;
      }
      if (ka !== Kind.Infinity) this.flags |= Sw.ZE;
      return infinity(sign);
    }
    // Denormal operands raise DE whatever the other operand is (infinities included, as the hardware does).
    this.denormalCheck(ka, kb);
    if (ka === Kind.Infinity) {
      if (kb === Kind.Infinity) {
        this.flags |= Sw.IE;
        return INDEFINITE;
      }
      return infinity(sign);
    }
    if (kb === Kind.Infinity) return zero(sign);
    if (ka === Kind.Zero) return zero(sign);
    const ua = unpack(a);
    const ub = unpack(b);
    const num = ua.sig << 130n;
    let quo = num / ub.sig;
    const rem = num - quo * ub.sig;
    quo = (quo << 1n) | (rem !== 0n ? 1n : 0n);
    return this.roundExt(sign, quo, ua.q - ub.q - 131, fmt);
  }

  sqrt(a: Ext80, fmt: Format): Ext80 {
    const k = classify(a);
    if (k === Kind.Unsupported) {
      this.flags |= Sw.IE;
      return INDEFINITE;
    }
    if (isNaNKind(k)) {
      if (k === Kind.SNaN) this.flags |= Sw.IE;
      return quiet(a);
    }
    if (k === Kind.Zero) return a;
    if (a.sign) {
      this.flags |= Sw.IE;
      return INDEFINITE;
    }
    if (k === Kind.Infinity) return a;
    if (k === Kind.Denormal) this.flags |= Sw.DE;
    const u = unpack(a);
    let sig = u.sig << 140n;
    let q = u.q - 140;
    if (q & 1) {
      sig <<= 1n;
      q -= 1;
    }
    let root = isqrt(sig);
    let rq = q / 2;
    if (root * root !== sig) {
      root = (root << 1n) | 1n;
      rq -= 1;
    }
    return this.roundExt(0, root, rq, fmt);
  }

  /**
   * Compares two values: returns -1, 0, 1, or 2 for unordered. Raises IE for SNaN (and for QNaN
   * when `signalQuiet`, the FCOM rule; FUCOM only signals on SNaN), DE for denormals.
   */
  compare(a: Ext80, b: Ext80, signalQuiet: boolean): number {
    const ka = classify(a);
    const kb = classify(b);
    if (ka === Kind.Unsupported || kb === Kind.Unsupported) {
      this.flags |= Sw.IE;
      return 2;
    }
    if (isNaNKind(ka) || isNaNKind(kb)) {
      if (signalQuiet || ka === Kind.SNaN || kb === Kind.SNaN) this.flags |= Sw.IE;
      return 2;
    }
    this.denormalCheck(ka, kb);
    return compareOrdered(a, ka, b, kb);
  }

  /** Rounds to an integral value in the register format (FRNDINT). */
  roundToIntegral(a: Ext80): Ext80 {
    const k = classify(a);
    if (k === Kind.Unsupported) {
      this.flags |= Sw.IE;
      return INDEFINITE;
    }
    if (isNaNKind(k)) {
      if (k === Kind.SNaN) this.flags |= Sw.IE;
      return quiet(a);
    }
    if (k === Kind.Zero || k === Kind.Infinity) return a;
    if (k === Kind.Denormal) this.flags |= Sw.DE;
    if (a.exp >= BIAS + 63) return a;
    const v = this.toInteger(a)!;
    if (v === 0n) return zero(a.sign);
    return this.fromInt(v);
  }

  /** ST(0) * 2^trunc(ST(1)) (FSCALE). */
  scale(a: Ext80, b: Ext80): Ext80 {
    const ka = classify(a);
    const kb = classify(b);
    const n = this.nanOperands(a, b, ka, kb);
    if (n) return n;
    // Denormal operands raise DE whatever the other operand is (infinities included, as the hardware does).
    this.denormalCheck(ka, kb);
    if (kb === Kind.Infinity) {
      if (b.sign) {
        if (ka === Kind.Infinity) {
          this.flags |= Sw.IE;
          return INDEFINITE;
        }
        return zero(a.sign);
      }
      if (ka === Kind.Zero) {
        this.flags |= Sw.IE;
        return INDEFINITE;
      }
      return infinity(a.sign);
    }
    if (ka === Kind.Zero || ka === Kind.Infinity) return a;
    const saved = this.flags;
    let t = this.toInteger(b, Rc.Zero)!;
    this.flags = saved;
    if (t > 100000n) t = 100000n;
    if (t < -100000n) t = -100000n;
    const u = unpack(a);
    return this.roundExt(a.sign, u.sig, u.q + Number(t), EXTENDED);
  }

  /**
   * Partial remainder (FPREM: quotient truncated; FPREM1: quotient rounded to nearest, IEEE).
   * Returns the remainder and the condition codes to set (C2 = incomplete; C0 = Q2, C3 = Q1,
   * C1 = Q0, SDM vol. 2 FPREM), or cc -1 for NaN and invalid operands (the SDM leaves the codes
   * undefined; the hardware clears C2 and keeps C0 C1 C3, which the caller mimics).
   */
  remainder(a: Ext80, b: Ext80, ieee: boolean): { value: Ext80; cc: number } {
    const ka = classify(a);
    const kb = classify(b);
    const n = this.nanOperands(a, b, ka, kb);
    if (n) return { value: n, cc: -1 };
    // Invalid (IE alone on hardware) before the denormal-operand check.
    if (ka === Kind.Infinity || kb === Kind.Zero) {
      this.flags |= Sw.IE;
      return { value: INDEFINITE, cc: -1 };
    }
    this.denormalCheck(ka, kb);
    if (ka === Kind.Zero || kb === Kind.Infinity) return { value: a, cc: 0 };
    const ua = unpack(a);
    const ub = unpack(b);
    const d = ua.q - ub.q;
    if (d >= 64) {
      // Partial reduction (SDM FPREM: "N is an implementation-dependent number between 32 and
      // 63"; 32 + (D - 64) mod 32 as QEMU's model of Intel parts); the caller loops while C2 is set.
      const nn = 32 + ((d - 64) % 32);
      const r = (ua.sig << BigInt(nn)) % ub.sig;
      return { value: this.exactOrZero(a.sign, r, ua.q - nn), cc: Sw.C2 };
    }
    let num = ua.sig;
    let den = ub.sig;
    let q = ub.q;
    if (d >= 0) num <<= BigInt(d);
    else {
      den <<= BigInt(-d);
      q = ua.q;
    }
    let quot = num / den;
    let r = num - quot * den;
    let sign = a.sign;
    if (ieee) {
      const twice = r * 2n;
      if (twice > den || (twice === den && (quot & 1n) === 1n)) {
        quot += 1n;
        r = den - r;
        sign ^= 1;
      }
    }
    let cc = 0;
    if (quot & 4n) cc |= Sw.C0;
    if (quot & 2n) cc |= Sw.C3;
    if (quot & 1n) cc |= Sw.C1;
    if (r === 0n) return { value: zero(a.sign), cc };
    return { value: this.roundExt(sign, r, q, EXTENDED), cc };
  }

  private exactOrZero(sign: number, sig: bigint, q: number): Ext80 {
    return sig === 0n ? zero(sign) : this.roundExt(sign, sig, q, EXTENDED);
  }

  /** Splits into unbiased exponent and significand with exponent 0 (FXTRACT). */
  extract(a: Ext80): { exponent: Ext80; significand: Ext80 } {
    const u = unpack(a);
    const e = u.q + 63;
    return { exponent: this.fromInt(BigInt(e)), significand: new Ext80(a.sign, BIAS, u.sig) };
  }
}

function compareOrdered(a: Ext80, ka: Kind, b: Ext80, kb: Kind): number {
  if (ka === Kind.Zero && kb === Kind.Zero) return 0;
  if (ka === Kind.Zero) return b.sign ? 1 : -1;
  if (kb === Kind.Zero) return a.sign ? -1 : 1;
  if (a.sign !== b.sign) return a.sign ? -1 : 1;
  let mag: number;
  if (ka === Kind.Infinity || kb === Kind.Infinity) {
    mag = ka === kb ? 0 : ka === Kind.Infinity ? 1 : -1;
  } else {
    const ua = unpack(a);
    const ub = unpack(b);
    mag = ua.q !== ub.q ? (ua.q > ub.q ? 1 : -1) : ua.sig === ub.sig ? 0 : ua.sig > ub.sig ? 1 : -1;
  }
  return a.sign ? -mag : mag;
}

function isqrt(n: bigint): bigint {
  if (n < 2n) return n;
  let x = 1n << BigInt(Math.ceil(bitLength(n) / 2));
  for (;;) {
    const y = (x + n / x) >> 1n;
    if (y >= x) return x;
    x = y;
  }
}

const scratch = new DataView(new ArrayBuffer(8));
