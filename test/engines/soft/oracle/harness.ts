/**
 * Runs oracle cases on every available runner (the software CPU by technique, the hardware through
 * KVM or as a host process, QEMU's user-mode emulator), checks each result against the case's
 * expectations and the runners against each other.
 *
 * A comparison needs the CPU under test and at least one oracle (a runner of another kind): a
 * random program no oracle ran fails, and so does a hand-written case with nothing to check but
 * agreement; a case with the SDM's expected values that every oracle sits out is checked against
 * those values alone, and the report says so.
 */
import type { OracleCase } from "./cases.js";
import { FLAG_BITS } from "./cases.js";
import { assemble, lineOffsets, nasmUnavailable } from "./nasm.js";
import {
  DATA_SIZE,
  describeResult,
  diffResults,
  END_VECTOR,
  FLAGS_COMPARED,
  LAYOUT,
  type Need,
  type RegName,
  type SnippetInput,
  type SnippetResult,
  type SnippetRunner,
  snippetSource,
  snippetSource64,
} from "./snippet.js";

export interface Runners {
  /** Runners that can run here. */
  available: SnippetRunner[];
  /** Why the others cannot (name -> reason). */
  missing: Record<string, string>;
}

async function tryRunner(load: () => Promise<SnippetRunner>, name: string, out: Runners): Promise<void> {
  const chosen = process.env.VESSEL_ORACLE_RUNNERS?.split(",").map((n) => n.trim());
  if (chosen !== undefined && !chosen.includes(name)) {
    out.missing[name] = `not chosen (VESSEL_ORACLE_RUNNERS=${process.env.VESSEL_ORACLE_RUNNERS})`;
    return;
  }
  try {
    const r = await load();
    const why = await r.unavailable();
    if (why === null) out.available.push(r);
    else out.missing[name] = why;
  } catch (e) {
    // A module that has not landed yet is "unavailable"; anything else is a real failure.
    if ((e as { code?: string }).code === "ERR_MODULE_NOT_FOUND") {
      out.missing[name] = `not built yet: ${(e as Error).message.split("\n")[0]}`;
    } else throw e;
  }
}

let cached: Promise<Runners> | undefined;

/**
 * The runners, loaded once per test process: the software CPU, interpreter first (every other
 * runner is compared with it), then its binary translator; the hardware through KVM, as a native
 * i386 process, as a 64-bit process (x87 cases only); QEMU's i386 user-mode emulator.
 * VESSEL_ORACLE_RUNNERS=soft,qemu (names, comma-separated) runs only those.
 */
export function loadRunners(): Promise<Runners> {
  cached ??= (async () => {
    const out: Runners = { available: [], missing: {} };
    const soft = async () => (await import("./soft_runner.js")).SoftRunner;
    await tryRunner(async () => new (await soft())("interp"), "soft", out);
    await tryRunner(async () => new (await soft())("bt"), "soft-bt", out);
    await tryRunner(async () => new (await import("./kvm_runner.js")).KvmRunner(), "kvm", out);
    await tryRunner(async () => new (await import("./host_runner.js")).HostRunner(), "host", out);
    await tryRunner(async () => new (await import("./host64_runner.js")).Host64Runner(), "host64", out);
    await tryRunner(async () => new (await import("./qemu_runner.js")).QemuRunner(), "qemu", out);
    return out;
  })();
  return cached;
}

/** Why the tests cannot run at all (nasm missing, or no soft CPU): they skip with this. */
export function skipReason(runners: Runners): string | null {
  const nasm = nasmUnavailable();
  if (nasm) return nasm;
  if (!runners.available.some((r) => r.kind === "tested")) {
    return `the soft CPU runner cannot run: ${runners.missing.soft ?? "not loaded"}`;
  }
  return null;
}

/** How to get each oracle, for the failure message of a comparison that had none. */
const INSTALL: Record<string, string> = {
  qemu: "install Debian's qemu-user-static (scripts/setup-host.sh) for the i386 oracle",
  host: "a kernel that runs i386 binaries (CONFIG_IA32_EMULATION) gives the native i386 oracle",
  host64: "an x86-64 host runs the x87 cases natively",
  kvm: "/dev/kvm gives the KVM oracle",
};

/** Why no oracle ran (what is missing and how to get it), for a failing comparison. */
export function noOracleMessage(runners: Runners, notes: readonly string[]): string {
  const missing = Object.entries(runners.missing)
    .filter(([n]) => !n.startsWith("soft"))
    .map(([n, why]) => `${n}: ${why}${INSTALL[n] ? ` (${INSTALL[n]})` : ""}`);
  return [
    "no oracle ran it, so nothing checked the soft CPU:",
    ...missing.map((m) => `  ${m}`),
    ...notes.map((n) => `  ${n}`),
  ].join("\n");
}

/**
 * A body as 64-bit code for host64_runner.ts, with the 32-bit offset of each 64-bit instruction
 * (the two sources have the same lines; nasm's listings give each line's offset in both).
 */
export function longModeCode(body: string): NonNullable<SnippetInput["code64"]> {
  const at32 = lineOffsets(snippetSource(body));
  const at64 = lineOffsets(snippetSource64(body));
  const offsets = new Map<number, number>();
  for (const [line, o64] of at64) {
    const o32 = at32.get(line);
    if (o32 !== undefined) offsets.set(o64, o32);
  }
  const code = assemble(snippetSource64(body));
  offsets.set(code.length, assemble(snippetSource(body)).length);
  return { code, offsets };
}

export function caseInput(c: OracleCase): SnippetInput {
  const data = new Uint8Array(DATA_SIZE);
  for (const [off, bytes] of Object.entries(c.data ?? {})) data.set(bytes, Number(off));
  const input: SnippetInput = { code: assemble(snippetSource(c.asm)), data };
  if (c.sameIn64) input.code64 = longModeCode(c.asm);
  if (c.regs) input.regs = c.regs;
  if (c.eflags !== undefined) input.eflags = c.eflags;
  return input;
}

function parseFlags(spec: string): { set: number; clear: number } {
  let set = 0;
  let clear = 0;
  for (const w of spec.split(/\s+/).filter(Boolean)) {
    const neg = w.startsWith("-");
    const bit = FLAG_BITS[neg ? w.slice(1) : w];
    if (bit === undefined) throw new Error(`unknown flag ${w}`);
    if (neg) clear |= bit;
    else set |= bit;
  }
  return { set, clear };
}

function ulpDistance(a: number, b: number): number {
  const buf = new DataView(new ArrayBuffer(8));
  buf.setFloat32(0, a, true);
  buf.setFloat32(4, b, true);
  const ia = buf.getInt32(0, true);
  const ib = buf.getInt32(4, true);
  return Math.abs((ia < 0 ? 0x80000000 - ia : ia) - (ib < 0 ? 0x80000000 - ib : ib));
}

/** Whether the case states expected values (the SDM's) beyond agreement between runners. */
export function hasExpectations(c: OracleCase): boolean {
  return (
    c.want !== undefined ||
    c.flags !== undefined ||
    c.wantData !== undefined ||
    c.floats !== undefined ||
    c.vector !== undefined
  );
}

/** The error-code bits `runner` reports faithfully for `vector`. */
function errorBits(runner: SnippetRunner, vector: number): number {
  return runner.errorCodeBits?.(vector) ?? -1;
}

/**
 * Problems of one result against the case's expectations (empty when it meets them); only the
 * error-code bits in `errorCodeBits` are checked.
 */
export function checkExpectations(
  c: OracleCase,
  input: SnippetInput,
  r: SnippetResult,
  errorCodeBits = -1,
): string[] {
  const out: string[] = [];
  const h = (v: number) => `0x${(v >>> 0).toString(16)}`;
  for (const [name, want] of Object.entries(c.want ?? {})) {
    const got = r.regs[name as RegName];
    if (got >>> 0 !== want >>> 0) out.push(`${name} = ${h(got)}, want ${h(want)}`);
  }
  if (c.flags) {
    const { set, clear } = parseFlags(c.flags);
    if ((r.eflags & set) !== set || (r.eflags & clear) !== 0) {
      out.push(`eflags = ${h(r.eflags)}, want set ${h(set)} clear ${h(clear)}`);
    }
  }
  if (!c.anyEnd) {
    const vector = c.vector ?? END_VECTOR;
    if (r.vector !== vector) out.push(`ended with vector ${r.vector}, want ${vector}`);
    const errorCode = c.errorCode ?? (c.vector === undefined ? 0 : undefined);
    const mask = (c.errorMask ?? -1) & errorCodeBits;
    if (errorCode !== undefined && (r.errorCode & mask) !== (errorCode & mask)) {
      out.push(`error code ${h(r.errorCode)}, want ${h(errorCode)}`);
    }
    const eip = LAYOUT.code + (c.eipOffset ?? (c.vector === undefined ? input.code.length - 1 : -1));
    if ((c.eipOffset !== undefined || c.vector === undefined) && r.eip >>> 0 !== eip) {
      out.push(`ended at eip ${h(r.eip)}, want ${h(eip)}`);
    }
  }
  for (const [off, bytes] of Object.entries(c.wantData ?? {})) {
    const o = Number(off);
    const got = r.data.subarray(o, o + bytes.length);
    if (!got.every((v, k) => v === bytes[k])) {
      out.push(
        `data+0x${o.toString(16)} = ${Buffer.from(got).toString("hex")}, want ${Buffer.from(bytes).toString("hex")}`,
      );
    }
  }
  const view = new DataView(r.data.buffer, r.data.byteOffset);
  for (const f of c.floats ?? []) {
    const got = view.getFloat32(f.offset, true);
    const want = Math.fround(f.want);
    if (ulpDistance(got, want) > f.ulps)
      out.push(`float at data+0x${f.offset.toString(16)} = ${got}, want ${want}`);
  }
  return out;
}

/** Zeroes the bytes a case excludes from the comparison between runners. */
function masked(c: OracleCase, r: SnippetResult, errorCodeBits: number, relocated: boolean): SnippetResult {
  const data = r.data.slice();
  for (const [o, n] of c.ignoreData ?? []) data.fill(0, o, o + n);
  if (relocated) for (const [o, n] of c.ipData ?? []) data.fill(0, o, o + n);
  for (const f of c.floats ?? []) data.fill(0, f.offset, f.offset + 4);
  return { ...r, data, errorCode: (r.errorCode & (c.errorMask ?? -1) & errorCodeBits) >>> 0 };
}

export interface CaseReport {
  /** Every problem (empty when all is well). */
  problems: string[];
  /** Runners that sat the case out, and why. */
  notes: string[];
  /** Names of the runners that ran the case. */
  ran: string[];
  /** How many of them are oracles (not the CPU under test). */
  oracles: number;
}

/** What the case needs from a runner: its own needs, and 32-bit code unless it says sameIn64. */
function caseNeeds(c: OracleCase): Need[] {
  return [...(c.needs ?? []), ...(c.sameIn64 ? [] : (["i386"] as const))];
}

/**
 * Runs a case on every runner that can run it; checks expectations and agreement. With
 * `requireOracle` (the default for cases without expected values) a case no oracle ran is a
 * problem.
 */
export async function runCase(
  c: OracleCase,
  runners: SnippetRunner[],
  requireOracle = !hasExpectations(c),
): Promise<CaseReport> {
  const input = caseInput(c);
  const problems: string[] = [];
  const notes: string[] = [];
  const results: [SnippetRunner, SnippetResult][] = [];
  for (const runner of runners) {
    let why: string | null = null;
    let quiet = false;
    for (const need of caseNeeds(c)) {
      if (why !== null) break;
      why = (await runner.cannot?.(need)) ?? null;
      // 32-bit code is every case but the x87 ones: host64 sitting those out is not news.
      quiet = need === "i386";
    }
    if (why !== null) {
      if (!quiet) notes.push(`${runner.name} sat out: ${why}`);
      continue;
    }
    try {
      const r = await runner.run(input);
      results.push([runner, r]);
      const bad = checkExpectations(c, input, r, errorBits(runner, r.vector));
      if (bad.length) problems.push(`${runner.name}: ${bad.join("; ")}\n  ${describeResult(r)}`);
    } catch (e) {
      problems.push(`${runner.name}: ${(e as Error).stack ?? String(e)}`);
    }
  }
  for (let i = 1; i < results.length; i++) {
    const [ra, a] = results[0]!;
    const [rb, b] = results[i]!;
    const bits = errorBits(ra, a.vector) & errorBits(rb, b.vector);
    const relocated = ra.relocatesCode === true || rb.relocatesCode === true;
    const d = diffResults(
      masked(c, a, bits, relocated),
      masked(c, b, bits, relocated),
      FLAGS_COMPARED & ~(c.undef ?? 0),
      c.ignoreRegs ?? [],
    );
    if (d.length) {
      problems.push(`${ra.name} and ${rb.name} disagree (${ra.name} vs ${rb.name}):\n  ${d.join("\n  ")}`);
    }
  }
  const oracles = results.filter(([r]) => r.kind !== "tested").length;
  if (oracles === 0 && requireOracle) {
    problems.push(`${c.name}: no oracle ran this case (${notes.join("; ") || "none available"})`);
  }
  return { problems, notes, ran: results.map(([r]) => r.name), oracles };
}

/**
 * Tallies which runners ran how many cases, for a test's diagnostics: "soft 60, soft-bt 60,
 * host 60, qemu 60".
 */
export class RunTally {
  private readonly counts = new Map<string, number>();
  private readonly sat = new Map<string, number>();
  cases = 0;

  add(report: CaseReport): void {
    this.cases++;
    for (const n of report.ran) this.counts.set(n, (this.counts.get(n) ?? 0) + 1);
    for (const n of report.notes) {
      const key = n.replace(/^(\S+) sat out: /, "$1: ");
      this.sat.set(key, (this.sat.get(key) ?? 0) + 1);
    }
  }

  lines(): string[] {
    const ran = [...this.counts].map(([n, k]) => `${n} ${k}`).join(", ");
    return [
      `${this.cases} case(s); ran on: ${ran || "nothing"}`,
      ...[...this.sat].map(([why, k]) => `sat out ${k} case(s): ${why}`),
    ];
  }
}
