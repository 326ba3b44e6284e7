/**
 * Seeded random differential tests, interpreter against translator (differential_harness.ts):
 * long straight-line programs and loops from the oracle's random program generator, the same
 * programs with faults planted in the middle (#PF on a read or a write that the handler fixes
 * before the instruction restarts, #GP, #DE, #UD resumed after), 16-bit code in a 16-bit code
 * segment, and every run cut at random budgets so blocks must stop and resume at any instruction.
 *
 * Reproduce one seed: VESSEL_BT_SEED=<seed> node scripts/test.mjs bt/differential_random
 * More seeds: VESSEL_BT_COUNT=<n> (default 24, seeds 1..n).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { GuestMemory } from "../../../../src/memory/guest_memory.js";
import { nasmUnavailable } from "../oracle/nasm.js";
import { Prng, randomProgram } from "../oracle/random_program.js";
import {
  type DiffCase,
  differential,
  exceptionLog,
  M,
  type Outcome,
  translatorNote,
} from "./differential_harness.js";

const skip = nasmUnavailable();
const one = process.env.VESSEL_BT_SEED;
const count = Number(process.env.VESSEL_BT_COUNT ?? 24);
const seeds = one !== undefined ? [Number(one)] : Array.from({ length: count }, (_, i) => i + 1);
const how = (seed: number) =>
  `seed ${seed}: VESSEL_BT_SEED=${seed} node scripts/test.mjs bt/differential_random`;

/** The generator's initial registers and data, written where the program finds them. */
function setupFor(
  p: ReturnType<typeof randomProgram>,
  extra?: (m: GuestMemory) => void,
): (m: GuestMemory) => void {
  return (m) => {
    m.write(M.DATA, p.data);
    extra?.(m);
  };
}

/** Loads the generator's registers (ESP stays the harness's ring-0 stack) and EFLAGS. */
function prologue(p: ReturnType<typeof randomProgram>): string {
  const regs = Object.entries(p.regs).map(([r, v]) => `  mov ${r}, 0x${(v >>> 0).toString(16)}`);
  return [`  push dword 0x${((p.eflags & 0xcd5) | 2).toString(16)}`, "  popfd", ...regs].join("\n");
}

/** Budget schedules: one long run, and seeded random cuts (including single instructions). */
function schedules(seed: number): number[][] {
  const g = new Prng(seed ^ 0x5eed);
  return [[1 << 20], Array.from({ length: 16 }, () => g.pick([1, 2, 3, 5, 17, 63, 64, 65, 100, 2047]))];
}

/**
 * Runs every case both ways; `expect` checks the reference run did what the case is for (so a
 * test cannot pass because nothing happened).
 */
function check(
  t: { diagnostic(s: string): void },
  cases: DiffCase[],
  seedOf: (i: number) => number,
  expect?: (o: Outcome) => string | undefined,
): void {
  const failures: string[] = [];
  let note = "";
  for (const [i, c] of cases.entries()) {
    const d = differential(c, schedules(seedOf(i)));
    note = translatorNote(d.translated);
    if (!d.reference.report.startsWith("HLT with interrupts disabled"))
      failures.push(
        `${c.name}: the reference run did not reach the END: ${d.reference.report.slice(0, 400)}`,
      );
    const wrong = expect?.(d.reference);
    if (wrong !== undefined) failures.push(`${c.name}: ${wrong}`);
    if (d.problems.length > 0) failures.push(`${d.problems.join("\n")}\n${c.body}`);
    if (failures.length >= 3) break;
  }
  t.diagnostic(note);
  assert.deepEqual(failures, [], failures.join("\n\n"));
}

test(`long straight-line random programs agree, interpreter vs translator (${seeds.length} seeds)`, (t) => {
  if (skip) return t.skip(skip);
  const cases = seeds.map((seed): DiffCase => {
    const p = randomProgram(seed, 240);
    return {
      name: how(seed),
      body: `${prologue(p)}\n${p.asm}`,
      setup: setupFor(p),
      undefinedFlags: p.undefinedFlags,
    };
  });
  check(t, cases, (i) => seeds[i]!);
});

test(`random programs in loops agree, interpreter vs translator (${seeds.length} seeds)`, (t) => {
  if (skip) return t.skip(skip);
  const cases = seeds.map((seed): DiffCase => {
    const p = randomProgram(seed + 10_000, 30);
    const iterations = 20 + (seed % 50);
    // CMP at the top defines every flag, so the body never reads one the last iteration left
    // undefined; the counter lives in memory because the body writes every register.
    return {
      name: `loop ${how(seed)}`,
      body: `${prologue(p)}
  mov dword [DATA+0x800], ${iterations}
loop_top:
  cmp eax, ebx
${p.asm}
  dec dword [DATA+0x800]
  jnz loop_top`,
      setup: setupFor(p),
      undefinedFlags: p.undefinedFlags & 1, // DEC writes all but CF
    };
  });
  check(t, cases, (i) => seeds[i]!);
});

/**
 * Plants faults between the generator's instructions: each is preceded by a CMP (so the flags in
 * the exception frame are defined) and, for those resumed after, by setting RECOVER.
 */
function withFaults(seed: number): DiffCase {
  const p = randomProgram(seed + 20_000, 120);
  const g = new Prng(seed);
  const lines = p.asm.split("\n");
  const out: string[] = [];
  let k = 0;
  let pfPage = 0;
  for (const line of lines) {
    out.push(line);
    // Not between the generator's paired lines (a label must follow its jump; MOV CL feeds a shift).
    if (line.endsWith(":") || g.below(6) !== 0) continue;
    const f = `flt${k++}`;
    const pf = `0x${(M.PF_LO + 0x1000 * (pfPage % 16) + g.below(0xffc)).toString(16)}`;
    switch (g.below(6)) {
      case 0: // #PF on a read, after register updates in the same block
        pfPage++;
        out.push("cmp esi, edi", `add dword [DATA+0x900], ${g.below(100)}`, `mov ebp, [${pf}]`);
        break;
      case 1: // #PF on a write (read-modify-write)
        pfPage++;
        out.push("cmp eax, ecx", `add [${pf}], edx`);
        break;
      case 2: // #DE from DIV by a zero in memory
        out.push(`mov dword [RECOVER], ${f}`, "cmp ebx, edx", "div dword [DATA+0xa00]", `${f}:`);
        break;
      case 3: // #GP loading a selector beyond the GDT limit
        out.push(`mov dword [RECOVER], ${f}`, "cmp edx, esi", "mov fs, [DATA+0xa04]", `${f}:`);
        break;
      case 4: // #UD
        out.push(`mov dword [RECOVER], ${f}`, "cmp ecx, ebp", "ud2", `${f}:`);
        break;
      default: // a fault after a write to the data area in the same block
        out.push(
          `mov dword [RECOVER], ${f}`,
          "cmp eax, edi",
          "mov [DATA+0xa10], eax",
          "div dword [DATA+0xa00]",
          `${f}:`,
        );
    }
  }
  return {
    name: `faults ${how(seed)}`,
    body: `${prologue(p)}\n${out.join("\n")}`,
    setup: setupFor(p, (m) => {
      m.writeU32(M.DATA + 0xa00, 0);
      m.writeU32(M.DATA + 0xa04, 0x1234);
    }),
    undefinedFlags: p.undefinedFlags,
  };
}

test(`random programs with faults in the middle of blocks agree, interpreter vs translator (${seeds.length} seeds)`, (t) => {
  if (skip) return t.skip(skip);
  let faults = 0;
  let restarts = 0;
  check(
    t,
    seeds.map(withFaults),
    (i) => seeds[i]!,
    (o) => {
      const log = exceptionLog(o);
      faults += log.length;
      restarts += log.filter((e) => e.vector === 14).length;
      return undefined;
    },
  );
  t.diagnostic(`${faults} exceptions taken in the reference runs, ${restarts} of them #PF restarts`);
  assert.ok(faults > seeds.length, "the planted faults were taken");
});

test(`random programs in a 16-bit code segment agree, interpreter vs translator (${seeds.length} seeds)`, (t) => {
  if (skip) return t.skip(skip);
  const cases = seeds.map((seed): DiffCase => {
    const p = randomProgram(seed + 30_000, 80);
    return {
      name: `16-bit ${how(seed)}`,
      body: `${prologue(p)}
  jmp 0x18:code16
BITS 16
code16:
${p.asm}
  jmp dword 0x08:back32
BITS 32
back32:`,
      setup: setupFor(p),
      undefinedFlags: p.undefinedFlags,
    };
  });
  check(t, cases, (i) => seeds[i]!);
});
