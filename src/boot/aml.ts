/**
 * A small ACPI Machine Language encoder: just what Vessel's DSDT needs (ACPI 6.4, section 20.2
 * "AML Grammar Definition"; resource descriptors in section 6.4). Each function returns bytes.
 */

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * PkgLength (20.2.4): the length of the package including the PkgLength bytes themselves. One
 * byte holds up to 63; otherwise bits 7-6 of the lead byte count the following bytes, bits 3-0
 * are the low nibble and each following byte holds the next 8 bits.
 */
export function pkgLength(contentLength: number): Uint8Array {
  if (contentLength + 1 < 0x40) return Uint8Array.of(contentLength + 1);
  for (let extra = 1; extra <= 3; extra++) {
    const total = contentLength + 1 + extra;
    if (total < 1 << (4 + 8 * extra)) {
      const bytes = new Uint8Array(1 + extra);
      bytes[0] = (extra << 6) | (total & 0x0f);
      for (let i = 1; i <= extra; i++) bytes[i] = (total >> (4 + 8 * (i - 1))) & 0xff;
      return bytes;
    }
  }
  throw new RangeError(`AML package too long: ${contentLength}`);
}

/** NameSeg (20.2.2): four characters, A-Z 0-9 _, padded with '_'. */
export function nameSeg(name: string): Uint8Array {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(name)) throw new RangeError(`bad AML NameSeg "${name}"`);
  return new TextEncoder().encode(name.padEnd(4, "_"));
}

/** NameString: an optional root prefix '\' then dot-separated segments (DualNamePrefix 0x2e). */
export function nameString(path: string): Uint8Array {
  const root = path.startsWith("\\");
  const segs = (root ? path.slice(1) : path).split(".").filter((s) => s.length > 0);
  const prefix = root ? [Uint8Array.of(0x5c)] : [];
  if (segs.length === 1) return concat([...prefix, nameSeg(segs[0]!)]);
  if (segs.length === 2) return concat([...prefix, Uint8Array.of(0x2e), ...segs.map(nameSeg)]);
  return concat([...prefix, Uint8Array.of(0x2f, segs.length), ...segs.map(nameSeg)]); // MultiNamePrefix
}

/** Integer data (20.2.3): ZeroOp, OneOp, or the smallest of Byte/Word/DWord/QWord prefixes. */
export function integer(value: number): Uint8Array {
  if (value === 0) return Uint8Array.of(0x00);
  if (value === 1) return Uint8Array.of(0x01);
  if (value <= 0xff) return Uint8Array.of(0x0a, value);
  if (value <= 0xffff) return Uint8Array.of(0x0b, value & 0xff, value >> 8);
  if (value <= 0xffffffff) {
    const b = new Uint8Array(5);
    b[0] = 0x0c;
    new DataView(b.buffer).setUint32(1, value, true);
    return b;
  }
  const b = new Uint8Array(9);
  b[0] = 0x0e;
  new DataView(b.buffer).setBigUint64(1, BigInt(value), true);
  return b;
}

/** String (20.2.3): StringPrefix 0x0d, ASCII characters, NUL. */
export function string(text: string): Uint8Array {
  return concat([Uint8Array.of(0x0d), new TextEncoder().encode(text), Uint8Array.of(0)]);
}

/** DefName (20.2.5.1): NameOp 0x08 NameString DataRefObject. */
export function name(path: string, data: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(0x08), nameString(path), data]);
}

/** DefScope (20.2.5.1): ScopeOp 0x10 PkgLength NameString TermList. */
export function scope(path: string, terms: readonly Uint8Array[]): Uint8Array {
  const body = concat([nameString(path), ...terms]);
  return concat([Uint8Array.of(0x10), pkgLength(body.length), body]);
}

/** DefDevice (20.2.5.2): ExtOpPrefix 0x5b, DeviceOp 0x82, PkgLength NameString TermList. */
export function device(path: string, terms: readonly Uint8Array[]): Uint8Array {
  const body = concat([nameString(path), ...terms]);
  return concat([Uint8Array.of(0x5b, 0x82), pkgLength(body.length), body]);
}

/** DefBuffer (20.2.5.4): BufferOp 0x11 PkgLength BufferSize ByteList. */
export function buffer(bytes: Uint8Array): Uint8Array {
  const body = concat([integer(bytes.length), bytes]);
  return concat([Uint8Array.of(0x11), pkgLength(body.length), body]);
}

/**
 * EISAID("PNP0501") (ACPI 6.4 section 6.1.5, _HID): three letters of 5 bits each (A = 1) and four
 * hex digits, stored big-endian in a DWord integer.
 */
export function eisaId(id: string): Uint8Array {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`bad EISA id "${id}"`);
  const c = (i: number): number => id.charCodeAt(i) - 0x40;
  const vendor = (c(0) << 10) | (c(1) << 5) | c(2);
  const product = Number.parseInt(id.slice(3), 16);
  const b = Uint8Array.of(0x0c, vendor >> 8, vendor & 0xff, product >> 8, product & 0xff);
  return b;
}

/** I/O port descriptor (6.4.2.5, small item 0x47): 16-bit decode, fixed base, `length` ports. */
export function io(base: number, length: number): Uint8Array {
  return Uint8Array.of(0x47, 0x01, base & 0xff, base >> 8, base & 0xff, base >> 8, 0x01, length);
}

/** Memory32Fixed resource descriptor (6.4.3.4, large item 0x86, length 9). */
export function memory32Fixed(base: number, size: number, writable = true): Uint8Array {
  const b = new Uint8Array(12);
  const dv = new DataView(b.buffer);
  b[0] = 0x86;
  dv.setUint16(1, 9, true);
  b[3] = writable ? 1 : 0;
  dv.setUint32(4, base, true);
  dv.setUint32(8, size, true);
  return b;
}

export interface InterruptFlags {
  /** Edge-triggered (true) or level-triggered (false). */
  edge: boolean;
  activeLow: boolean;
  shared: boolean;
}

/**
 * Extended Interrupt descriptor (6.4.3.6, large item 0x89): flags bit 0 consumer, bit 1 edge,
 * bit 2 active-low, bit 3 shared; then the count and the 32-bit interrupt numbers (GSIs on x86).
 */
export function extendedInterrupt(gsi: number, flags: InterruptFlags): Uint8Array {
  const b = new Uint8Array(9);
  const dv = new DataView(b.buffer);
  b[0] = 0x89;
  dv.setUint16(1, 6, true);
  b[3] = 0x01 | (flags.edge ? 0x02 : 0) | (flags.activeLow ? 0x04 : 0) | (flags.shared ? 0x08 : 0);
  b[4] = 1;
  dv.setUint32(5, gsi, true);
  return b;
}

/** ResourceTemplate: a Buffer of descriptors closed by the End Tag (6.4.2.9: 0x79, checksum 0). */
export function resourceTemplate(descriptors: readonly Uint8Array[]): Uint8Array {
  return buffer(concat([...descriptors, Uint8Array.of(0x79, 0x00)]));
}

export { concat as amlConcat };
