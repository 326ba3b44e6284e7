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
import { randomProgram } from "./random_program.js";
import { randomX87Program } from "./random_x87.js";
import { AF } from "./snippet.js";

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
