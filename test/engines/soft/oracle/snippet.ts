/**
 * The snippet ABI shared by the oracle runners (software CPU and hardware through KVM).
 *
 * A snippet is 32-bit code that runs in ring 3 with flat 4 GiB code/data segments (base 0),
 * starting at `LAYOUT.code` with the given general registers and EFLAGS, with a read/write data
 * area at `LAYOUT.data` (`DATA_SIZE` bytes, initial bytes given by the test) and a stack below
 * `LAYOUT.stackTop`. It ends at the first exception: a test's normal end is the `END` marker
 * (`hlt`, which is privileged and raises #GP(0) in ring 3 with EIP at the HLT), and a test that
 * expects an exception (#DE, #UD, ...) ends there. The runner reports the general registers
 * (ESP as it was in ring 3), EFLAGS, the faulting EIP, the vector and error code, and the data
 * area after the run.
 */

/** Addresses the snippet sees: the same on every runner, so pushed addresses compare equal. */
export const LAYOUT = {
  code: 0x0040_0000,
  data: 0x0050_0000,
  stackTop: 0x0060_0000,
} as const;
export const DATA_SIZE = 4096;

/** The snippet's end: ring 3 HLT, #GP(0). */
export const END = "hlt";
export const END_VECTOR = 13;

export const REG_NAMES = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"] as const;
export type RegName = (typeof REG_NAMES)[number];
export type Regs = Record<RegName, number>;

export interface SnippetInput {
  /** Machine code, assembled for ORG LAYOUT.code. */
  code: Uint8Array;
  /** Initial general registers (default 0; ESP defaults to LAYOUT.stackTop). */
  regs?: Partial<Regs>;
  /** Initial EFLAGS: only CF PF AF ZF SF DF OF are taken; the snippet runs with IF=0, IOPL=0. */
  eflags?: number;
  /** Initial bytes of the data area (the rest is zero). */
  data?: Uint8Array;
  /**
   * The same snippet as 64-bit code (`snippetSource64`), given only when it means the same there
   * (x87 work and plain register moves: see host64_runner.ts), with the 32-bit offset of each of
   * its instructions (64-bit offset -> 32-bit offset; some encodings differ in length).
   */
  code64?: { code: Uint8Array; offsets: Map<number, number> };
}

export interface SnippetResult {
  regs: Regs;
  eflags: number;
  /** EIP of the exception that ended the run (for a fault, the faulting instruction). */
  eip: number;
  vector: number;
  errorCode: number;
  /** CR2 after a page fault (vector 14); compared only then. */
  cr2?: number;
  data: Uint8Array;
}

export interface SnippetRunner {
  readonly name: string;
  /**
   * What the runner's results stand for: the CPU under test (the soft CPU, by technique), the
   * hardware (KVM, a host process), or another emulator (QEMU). A differential comparison needs
   * the CPU under test and at least one runner that is not.
   */
  readonly kind: "tested" | "hardware" | "emulator";
  /**
   * The runner's code sits at other addresses than the 32-bit assembly's (host64): the x87
   * instruction pointers a case stores (`ipData`) are not compared with its results.
   */
  readonly relocatesCode?: boolean;
  /** null when the runner can run here, else the reason it cannot (the test skips). */
  unavailable(): Promise<string | null>;
  run(input: SnippetInput): Promise<SnippetResult>;
  /**
   * null when the runner can execute instructions of the kind `need`, else why not (the case then
   * runs on the other runners only, and the report says so).
   */
  cannot?(need: Need): Promise<string | null>;
  /**
   * The error-code bits the runner reports as the hardware would for `vector` (default all):
   * QEMU's user-mode page faults do not know the P bit (qemu_runner.ts). Only these bits are
   * checked and compared for its results.
   */
  errorCodeBits?(vector: number): number;
}

/**
 * Instruction kinds some oracle runners cannot run, or cannot report (probes.ts probes them):
 * - x87, bcd, enter-nested, bound, into: KVM's instruction emulator on a PVM host lacks them
 *   (kvm_runner.ts); QEMU user mode reports #OF and #BR as #GP (signal_vector.ts);
 * - x87-unmasked: an unmasked x87 exception raises #MF (QEMU user mode never raises it);
 * - rf: the exception's EFLAGS has RF as a fault pushes it (QEMU's signal frame lacks it);
 * - cmpxchg8b: CMPXCHG8B leaves the flags other than ZF alone (QEMU 7.2's does not);
 * - i386: the snippet is 32-bit code that means something else as 64-bit code (every case that
 *   does not say `sameIn64`; host64_runner.ts runs only the others).
 */
export type Need =
  | "x87"
  | "x87-unmasked"
  | "bcd"
  | "enter-nested"
  | "bound"
  | "into"
  | "rf"
  | "cmpxchg8b"
  | "i386";

/** EFLAGS bits compared by default: the six arithmetic flags and DF. */
export const FLAGS_COMPARED = 0x0cd5;

export const CF = 0x001;
export const PF = 0x004;
export const AF = 0x010;
export const ZF = 0x040;
export const SF = 0x080;
export const OF = 0x800;

/** Wraps a test body into a complete NASM source for the snippet ABI. */
export function snippetSource(body: string): string {
  return [
    "BITS 32",
    `ORG 0x${LAYOUT.code.toString(16)}`,
    `%define DATA 0x${LAYOUT.data.toString(16)}`,
    `%define STACK_TOP 0x${LAYOUT.stackTop.toString(16)}`,
    "start:",
    body,
    `end_marker: ${END}`,
    "",
  ].join("\n");
}

/**
 * The same body as 64-bit code, for host64_runner.ts. `[DATA+x]` becomes a SIB absolute address
 * (the same location); some forms are longer than in 32-bit code (MOV AX, moffs has no 32-bit
 * form in 64-bit mode), so instruction addresses differ: see `longModeCode`.
 */
export function snippetSource64(body: string): string {
  return snippetSource(body).replace("BITS 32\n", "BITS 64\n");
}

const hex = (v: number) => `0x${(v >>> 0).toString(16).padStart(8, "0")}`;

/**
 * Differences between two results, as readable lines (empty when they agree). `flagMask` says
 * which EFLAGS bits count; registers in `ignoreRegs` are skipped (undefined results).
 */
export function diffResults(
  a: SnippetResult,
  b: SnippetResult,
  flagMask = FLAGS_COMPARED,
  ignoreRegs: readonly RegName[] = [],
): string[] {
  const out: string[] = [];
  for (const r of REG_NAMES) {
    if (ignoreRegs.includes(r)) continue;
    if (a.regs[r] >>> 0 !== b.regs[r] >>> 0) out.push(`${r}: ${hex(a.regs[r])} vs ${hex(b.regs[r])}`);
  }
  if ((a.eflags & flagMask) !== (b.eflags & flagMask)) {
    out.push(`eflags&${hex(flagMask)}: ${hex(a.eflags & flagMask)} vs ${hex(b.eflags & flagMask)}`);
  }
  if (a.vector !== b.vector) out.push(`vector: ${a.vector} vs ${b.vector}`);
  if (a.eip >>> 0 !== b.eip >>> 0) out.push(`eip: ${hex(a.eip)} vs ${hex(b.eip)}`);
  if (a.vector === b.vector && a.errorCode !== b.errorCode) {
    out.push(`error code: ${hex(a.errorCode)} vs ${hex(b.errorCode)}`);
  }
  if (a.vector === 14 && b.vector === 14 && a.cr2 !== undefined && b.cr2 !== undefined && a.cr2 !== b.cr2) {
    out.push(`cr2: ${hex(a.cr2)} vs ${hex(b.cr2)}`);
  }
  for (let i = 0; i < Math.min(a.data.length, b.data.length); i += 4) {
    const x = a.data.subarray(i, i + 4);
    const y = b.data.subarray(i, i + 4);
    if (x.some((v, k) => v !== y[k])) {
      out.push(
        `data+${i.toString(16)}: ${Buffer.from(x).toString("hex")} vs ${Buffer.from(y).toString("hex")}`,
      );
      if (out.length > 40) break;
    }
  }
  return out;
}

export function describeResult(r: SnippetResult): string {
  const regs = REG_NAMES.map((n) => `${n}=${hex(r.regs[n])}`).join(" ");
  return `${regs} eflags=${hex(r.eflags)} exit=#${r.vector}(${hex(r.errorCode)}) at ${hex(r.eip)}`;
}

/** Little-endian data-area builder. */
export function dataBytes(words: readonly number[], size = 4): Uint8Array {
  const out = new Uint8Array(DATA_SIZE);
  const v = new DataView(out.buffer);
  words.forEach((w, i) => {
    if (size === 4) v.setUint32(i * 4, w >>> 0, true);
    else if (size === 2) v.setUint16(i * 2, w & 0xffff, true);
    else v.setUint8(i, w & 0xff);
  });
  return out;
}

export function u32(data: Uint8Array, offset: number): number {
  return new DataView(data.buffer, data.byteOffset).getUint32(offset, true);
}
