/**
 * Runs oracle cases on every available runner (software CPU, hardware through KVM), checks each
 * result against the case's expectations and the runners against each other.
 */
import type { OracleCase } from "./cases.js";
import { FLAG_BITS } from "./cases.js";
import { assemble, nasmUnavailable } from "./nasm.js";
import {
  DATA_SIZE,
  describeResult,
  diffResults,
  END_VECTOR,
  FLAGS_COMPARED,
  LAYOUT,
  type RegName,
  type SnippetInput,
  type SnippetResult,
  type SnippetRunner,
  snippetSource,
} from "./snippet.js";

export interface Runners {
  /** Runners that can run here. */
  available: SnippetRunner[];
  /** Why the others cannot (name -> reason). */
  missing: Record<string, string>;
}

async function tryRunner(load: () => Promise<SnippetRunner>, name: string, out: Runners): Promise<void> {
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
 * The runners, loaded once per test process: the software CPU (first: every other runner is
 * compared with it), the hardware through KVM, the hardware as a native i386 process.
 */
export function loadRunners(): Promise<Runners> {
  cached ??= (async () => {
    const out: Runners = { available: [], missing: {} };
    await tryRunner(async () => new (await import("./soft_runner.js")).SoftRunner(), "soft", out);
    await tryRunner(async () => new (await import("./kvm_runner.js")).KvmRunner(), "kvm", out);
    await tryRunner(async () => new (await import("./host_runner.js")).HostRunner(), "host", out);
    return out;
  })();
  return cached;
}

export function skipReason(runners: Runners): string | null {
  const nasm = nasmUnavailable();
  if (nasm) return nasm;
  if (runners.available.length === 0) {
    return `no runner: ${Object.entries(runners.missing)
      .map(([n, w]) => `${n}: ${w}`)
      .join("; ")}`;
  }
  return null;
}

export function caseInput(c: OracleCase): SnippetInput {
  const data = new Uint8Array(DATA_SIZE);
  for (const [off, bytes] of Object.entries(c.data ?? {})) data.set(bytes, Number(off));
  const input: SnippetInput = { code: assemble(snippetSource(c.asm)), data };
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

/** Problems of one result against the case's expectations (empty when it meets them). */
export function checkExpectations(c: OracleCase, input: SnippetInput, r: SnippetResult): string[] {
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
    const mask = c.errorMask ?? -1;
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
function masked(c: OracleCase, r: SnippetResult): SnippetResult {
  const data = r.data.slice();
  for (const [o, n] of c.ignoreData ?? []) data.fill(0, o, o + n);
  for (const f of c.floats ?? []) data.fill(0, f.offset, f.offset + 4);
  return { ...r, data, errorCode: (r.errorCode & (c.errorMask ?? -1)) >>> 0 };
}

export interface CaseReport {
  /** Every problem (empty when all is well). */
  problems: string[];
  /** Runners that sat the case out, and why. */
  notes: string[];
}

/** Runs a case on every runner that can run it; checks expectations and agreement. */
export async function runCase(c: OracleCase, runners: SnippetRunner[]): Promise<CaseReport> {
  const input = caseInput(c);
  const problems: string[] = [];
  const notes: string[] = [];
  const results: [string, SnippetResult][] = [];
  for (const runner of runners) {
    let why: string | null = null;
    for (const need of c.needs ?? []) why ??= (await runner.cannot?.(need)) ?? null;
    if (why !== null) {
      notes.push(`${runner.name} sat out: ${why}`);
      continue;
    }
    try {
      const r = await runner.run(input);
      results.push([runner.name, r]);
      const bad = checkExpectations(c, input, r);
      if (bad.length) problems.push(`${runner.name}: ${bad.join("; ")}\n  ${describeResult(r)}`);
    } catch (e) {
      problems.push(`${runner.name}: ${(e as Error).stack ?? String(e)}`);
    }
  }
  for (let i = 1; i < results.length; i++) {
    const [na, a] = results[0]!;
    const [nb, b] = results[i]!;
    const d = diffResults(masked(c, a), masked(c, b), FLAGS_COMPARED & ~(c.undef ?? 0), c.ignoreRegs ?? []);
    if (d.length) problems.push(`${na} and ${nb} disagree (${na} vs ${nb}):\n  ${d.join("\n  ")}`);
  }
  return { problems, notes };
}
