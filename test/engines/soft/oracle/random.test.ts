/**
 * Random differential tests: seeded random instruction sequences (random_program.ts, integer;
 * random_x87.ts, x87) run on the software CPU (interpreter and binary translator) and on every
 * oracle this host has; registers, EFLAGS (without the flags the SDM leaves undefined) and the
 * data area must agree. The oracles: the hardware through KVM, as a native i386 process, as a
 * 64-bit process (x87 programs only: their code means the same there), and QEMU's i386 user-mode
 * emulator (integer programs; its x87 is not the hardware's, see qemu_runner.ts). A program that
 * no oracle ran fails, naming what is missing and how to install it.
 *
 * Reproduce one program: VESSEL_ORACLE_SEED=<seed> node scripts/test.mjs oracle/random
 * More programs: VESSEL_ORACLE_COUNT=<n> (default 60, seeds 1..n).
 * Only some runners: VESSEL_ORACLE_RUNNERS=soft,qemu (harness.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { OracleCase } from "./cases.js";
import { longModeCode, loadRunners, noOracleMessage, RunTally, runCase, skipReason } from "./harness.js";
import { assemble } from "./nasm.js";
import { Prng, type RandomProgram, randomProgram } from "./random_program.js";
import { randomX87Program } from "./random_x87.js";
import { AF, type SnippetInput, type SnippetRunner, snippetSource } from "./snippet.js";

const runners = await loadRunners();
const skip = skipReason(runners);
const one = process.env.VESSEL_ORACLE_SEED;
const count = Number(process.env.VESSEL_ORACLE_COUNT ?? 60);
const seeds = one !== undefined ? [Number(one)] : Array.from({ length: count }, (_, i) => i + 1);

/**
 * Runs each seed's case on every runner; fails on disagreement or on a program no oracle ran,
 * and reports which runners ran how many programs.
 */
async function differential(
  t: { diagnostic(m: string): void },
  make: (seed: number) => { c: OracleCase; listing: string; requireOracle?: boolean }[],
): Promise<void> {
  for (const [name, why] of Object.entries(runners.missing)) t.diagnostic(`${name} not run: ${why}`);
  const tally = new RunTally();
  const failures: string[] = [];
  for (const seed of seeds) {
    for (const { c, listing, requireOracle = true } of make(seed)) {
      const report = await runCase(c, runners.available, requireOracle);
      tally.add(report);
      if (report.oracles === 0 && requireOracle) {
        const also = report.problems.length ? `\n${report.problems.join("\n")}` : "";
        failures.push(`${c.name}: ${noOracleMessage(runners, report.notes)}${also}`);
        break;
      }
      if (report.problems.length) {
        failures.push(
          `${c.name} (VESSEL_ORACLE_SEED=${seed} node scripts/test.mjs oracle/random):\n${report.problems.join("\n")}\n${listing}`,
        );
      }
    }
    if (failures.length >= 3) break;
  }
  for (const line of tally.lines()) t.diagnostic(line);
  assert.deepEqual(failures, [], failures.join("\n\n"));
}

// FNSTENV at 0xf80 (random_x87.ts): FCS and FDS (+0x10, +0x18) are the runner's selectors
// (Linux's 0x23/0x2b in a host process); FIP (+0xc) is the code address, elsewhere in host64.
const X87_ENV_SELECTORS: [number, number][] = [
  [0xf90, 2],
  [0xf98, 2],
];
const X87_ENV_IP: [number, number][] = [[0xf8c, 4]];

test(`random instruction sequences agree between runners (${seeds.length} programs)`, async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  // A program with CMPXCHG8B runs on every runner but QEMU (its CMPXCHG8B is broken: see
  // qemu_runner.ts); the seed's twin, with XLAT in its place, runs on all of them and stands in
  // for it where QEMU is the only oracle. CMPXCHG8B itself is then checked by the hand-written
  // cases with the SDM's values (cases.ts, atomic).
  const programCase = (name: string, p: RandomProgram, twin: boolean) => ({
    c: {
      name,
      asm: p.asm,
      regs: p.regs,
      eflags: p.eflags,
      data: { 0: p.data },
      undef: p.undefinedFlags,
      ...(twin ? { needs: ["cmpxchg8b" as const] } : {}),
    },
    listing: `initial regs ${JSON.stringify(p.regs)} eflags 0x${p.eflags.toString(16)}\n${p.asm}`,
    requireOracle: !twin,
  });
  await differential(t, (seed) => {
    const p = randomProgram(seed);
    if (!p.asm.includes("cmpxchg8b")) return [programCase(`random seed ${seed}`, p, false)];
    return [
      programCase(`random seed ${seed}`, p, true),
      programCase(`random seed ${seed} without CMPXCHG8B`, randomProgram(seed, 40, false), false),
    ];
  });
});

test(`random x87 programs agree between runners (${seeds.length} programs)`, async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  await differential(t, (seed) => {
    const p = randomX87Program(seed);
    return [
      {
        c: {
          name: `random x87 seed ${seed}`,
          asm: p.asm,
          data: { 0: p.data },
          undef: AF,
          needs: ["x87"],
          sameIn64: true,
          ignoreData: X87_ENV_SELECTORS,
          ipData: X87_ENV_IP,
        },
        listing: p.asm,
      },
    ];
  });
});

test(`random x87 programs with unmasked exceptions agree between runners (${seeds.length} programs)`, async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  await differential(t, (seed) => {
    const p = randomX87Program(seed, 24, true);
    return [
      {
        c: {
          name: `random x87 unmasked seed ${seed}`,
          anyEnd: true,
          asm: p.asm,
          data: { 0: p.data },
          undef: AF,
          needs: ["x87", "x87-unmasked"],
          sameIn64: true,
          ignoreData: X87_ENV_SELECTORS,
          ipData: X87_ENV_IP,
        },
        listing: p.asm,
      },
    ];
  });
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

/**
 * The runners whose x87 is the hardware's, for `input`: KVM where its emulator has x87, the i386
 * process, the 64-bit process. QEMU is left out on purpose: its FSIN/FCOS/FPTAN are the host
 * libm's double results, not the x87's (qemu_runner.ts).
 */
async function hardwareX87(input: SnippetInput): Promise<SnippetRunner[]> {
  const out: SnippetRunner[] = [];
  for (const r of runners.available) {
    if (r.kind !== "hardware" || (await r.cannot?.("x87")) != null) continue;
    if (input.code64 === undefined && (await r.cannot?.("i386")) != null) continue;
    out.push(r);
  }
  return out;
}

test("x87 transcendental instructions agree with the hardware within 4 ulps of a double", async (t) => {
  if (skip) {
    t.skip(skip);
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
  const body = lines.join("\n");
  // x87 loads, operations and stores only: the same as 64-bit code.
  const input: SnippetInput = { code: assemble(snippetSource(body)), data, code64: longModeCode(body) };
  const tested = runners.available.filter((r) => r.kind === "tested");
  const oracles = await hardwareX87(input);
  assert.ok(
    oracles.length > 0,
    `no runner here executes x87 on the hardware, so nothing checks the soft FPU's transcendentals:\n${noOracleMessage(runners, [])}`,
  );
  const bad: string[] = [];
  for (const hw of oracles) {
    const b = await hw.run(input);
    const bv = new DataView(b.data.buffer, b.data.byteOffset);
    for (const soft of tested) {
      const a = await soft.run(input);
      const av = new DataView(a.data.buffer, a.data.byteOffset);
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const x = av.getFloat64(2048 + 8 * i, true);
        const y = bv.getFloat64(2048 + 8 * i, true);
        const d = ulps64(x, y);
        worst = Math.max(worst, d);
        if (d > 4) bad.push(`${what[i]}: ${soft.name} ${x} vs ${hw.name} ${y}`);
      }
      t.diagnostic(
        `${soft.name} vs ${hw.name}: largest difference ${worst} ulp of a double over ${n} results`,
      );
    }
  }
  assert.deepEqual(bad, []);
});
