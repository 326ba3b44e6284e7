/**
 * Random differential test: seeded random instruction sequences (random_program.ts) run on the
 * software CPU and on the hardware through KVM; registers, EFLAGS (without the flags the SDM
 * leaves undefined) and the data area must agree. Without KVM the programs still run on the
 * software CPU and must end at the END marker.
 *
 * Reproduce one program: VESSEL_ORACLE_SEED=<seed> node scripts/test.mjs oracle/random
 * More programs: VESSEL_ORACLE_COUNT=<n> (default 60, seeds 1..n).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadRunners, runCase, skipReason } from "./harness.js";
import type { OracleCase } from "./cases.js";
import { assemble } from "./nasm.js";
import { Prng, randomProgram } from "./random_program.js";
import { randomX87Program } from "./random_x87.js";
import { AF, snippetSource } from "./snippet.js";

const runners = await loadRunners();
const skip = skipReason(runners);
const one = process.env.VESSEL_ORACLE_SEED;
const count = Number(process.env.VESSEL_ORACLE_COUNT ?? 60);
const seeds = one !== undefined ? [Number(one)] : Array.from({ length: count }, (_, i) => i + 1);

test(`random instruction sequences agree between runners (${seeds.length} programs)`, async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  for (const [name, why] of Object.entries(runners.missing)) t.diagnostic(`${name} not run: ${why}`);
  const failures: string[] = [];
  for (const seed of seeds) {
    const p = randomProgram(seed);
    const c: OracleCase = {
      name: `random seed ${seed}`,
      asm: p.asm,
      regs: p.regs,
      eflags: p.eflags,
      data: { 0: p.data },
      undef: p.undefinedFlags,
    };
    const { problems } = await runCase(c, runners.available);
    if (problems.length) {
      failures.push(
        `seed ${seed} (VESSEL_ORACLE_SEED=${seed} node scripts/test.mjs oracle/random):\n${problems.join("\n")}\n` +
          `initial regs ${JSON.stringify(p.regs)} eflags 0x${p.eflags.toString(16)}\n${p.asm}`,
      );
      if (failures.length >= 3) break;
    }
  }
  assert.deepEqual(failures, [], failures.join("\n\n"));
});

test(`random x87 programs agree between runners (${seeds.length} programs)`, async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  const failures: string[] = [];
  let notes: string[] = [];
  for (const seed of seeds) {
    const p = randomX87Program(seed);
    const c: OracleCase = {
      name: `random x87 seed ${seed}`,
      asm: p.asm,
      data: { 0: p.data },
      undef: AF,
      needs: ["x87"],
      // FNSTENV's FCS and FDS are the runner's selectors (Linux's 0x23/0x2b in a host process).
      ignoreData: [
        [0xf90, 2],
        [0xf98, 2],
      ],
    };
    const report = await runCase(c, runners.available);
    notes = report.notes;
    if (report.problems.length) {
      failures.push(
        `x87 seed ${seed} (VESSEL_ORACLE_SEED=${seed} node scripts/test.mjs oracle/random):\n${report.problems.join("\n")}\n${p.asm}`,
      );
      if (failures.length >= 3) break;
    }
  }
  for (const n of notes) t.diagnostic(n);
  if (runners.available.length - notes.length < 2)
    t.diagnostic("only one runner can run x87 here: nothing to compare");
  assert.deepEqual(failures, [], failures.join("\n\n"));
});

test(`random x87 programs with unmasked exceptions agree between runners (${seeds.length} programs)`, async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  const failures: string[] = [];
  let notes: string[] = [];
  for (const seed of seeds) {
    const p = randomX87Program(seed, 24, true);
    const c: OracleCase = {
      name: `random x87 unmasked seed ${seed}`,
      anyEnd: true,
      asm: p.asm,
      data: { 0: p.data },
      undef: AF,
      needs: ["x87"],
      // FNSTENV's FCS and FDS are the runner's selectors (Linux's 0x23/0x2b in a host process).
      ignoreData: [
        [0xf90, 2],
        [0xf98, 2],
      ],
    };
    const report = await runCase(c, runners.available);
    notes = report.notes;
    if (report.problems.length) {
      failures.push(
        `x87 unmasked seed ${seed} (VESSEL_ORACLE_SEED=${seed} node scripts/test.mjs oracle/random):\n${report.problems.join("\n")}\n${p.asm}`,
      );
      if (failures.length >= 3) break;
    }
  }
  for (const n of notes) t.diagnostic(n);
  if (runners.available.length - notes.length < 2)
    t.diagnostic("only one runner can run x87 here: nothing to compare");
  assert.deepEqual(failures, [], failures.join("\n\n"));
});

/** Distance in units in the last place between two doubles (through their ordered bit patterns). */
function ulps64(a: number, b: number): number {
  if (a === b) return 0;
  if (Number.isNaN(a) || Number.isNaN(b))
    return Number.isNaN(a) && Number.isNaN(b) ? 0 : Number.POSITIVE_INFINITY;
  const v = new DataView(new ArrayBuffer(8));
  const key = (x: number) => {
    v.setFloat64(0, x, true);
    const bits = v.getBigInt64(0, true);
    return bits < 0n ? -(bits & 0x7fffffffffffffffn) : bits;
  };
  const d = key(a) - key(b);
  return Number(d < 0n ? -d : d);
}

test("x87 transcendental instructions agree with the hardware within 4 ulps of a double", async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  const soft = runners.available.find((r) => r.name === "soft");
  const oracle = [];
  for (const r of runners.available) if (r !== soft && (await r.cannot?.("x87")) == null) oracle.push(r);
  const hw = oracle[0];
  if (soft === undefined || hw === undefined) {
    t.skip("no runner here executes x87 on the hardware");
    return;
  }
  // F2XM1 |x| <= 1, FYL2X x > 0, FYL2XP1 |x| < 1 - sqrt(2)/2, FPATAN any, FSIN/FCOS/FPTAN |x| < 64
  // (the hardware reduces larger arguments with a 66-bit pi: a documented precision difference).
  const ops: [string, (g: Prng) => number][] = [
    ["f2xm1", (g) => (g.next() / 0x100000000) * 2 - 1],
    ["fld1\nfxch\nfyl2x", (g) => (g.next() / 0x100000000) * 1000 + 1e-3],
    ["fld1\nfxch\nfyl2xp1", (g) => (g.next() / 0x100000000) * 0.58 - 0.29],
    ["fld1\nfpatan", (g) => (g.next() / 0x100000000) * 20 - 10],
    ["fsin", (g) => (g.next() / 0x100000000) * 128 - 64],
    ["fcos", (g) => (g.next() / 0x100000000) * 128 - 64],
    ["fptan\nfstp st0", (g) => (g.next() / 0x100000000) * 3 - 1.5],
  ];
  const g = new Prng(seeds[0] ?? 1);
  const lines = ["fninit"];
  const data = new Uint8Array(4096);
  const view = new DataView(data.buffer);
  const n = 200;
  const what: string[] = [];
  for (let i = 0; i < n; i++) {
    const [op, arg] = ops[i % ops.length]!;
    const x = arg(g);
    view.setFloat64(8 * i, x, true);
    lines.push(`fld qword [DATA+${8 * i}]`, op, `fstp qword [DATA+${2048 + 8 * i}]`);
    what.push(`${op.replace(/\n/g, "; ")}(${x})`);
  }
  const input = { code: assemble(snippetSource(lines.join("\n"))), data };
  const a = await soft.run(input);
  const b = await hw.run(input);
  const bad: string[] = [];
  let worst = 0;
  const av = new DataView(a.data.buffer, a.data.byteOffset);
  const bv = new DataView(b.data.buffer, b.data.byteOffset);
  for (let i = 0; i < n; i++) {
    const x = av.getFloat64(2048 + 8 * i, true);
    const y = bv.getFloat64(2048 + 8 * i, true);
    const d = ulps64(x, y);
    worst = Math.max(worst, d);
    if (d > 4) bad.push(`${what[i]}: soft ${x} vs ${hw.name} ${y}`);
  }
  t.diagnostic(`largest difference from ${hw.name}: ${worst} ulp of a double over ${n} results`);
  assert.deepEqual(bad, []);
});
