/**
 * Machine-code tests for every instruction group (cases.ts), run on the software CPU and on the
 * hardware through KVM where the host has it: each runner must meet the SDM's expected values,
 * and the runners must agree with each other (the hardware is the oracle).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GROUPS } from "./cases.js";
import { loadRunners, runCase, skipReason } from "./harness.js";

const runners = await loadRunners();
const skip = skipReason(runners);

for (const [group, cases] of Object.entries(GROUPS)) {
  describe(`oracle: ${group}`, () => {
    for (const c of cases) {
      it(c.name, c.todo === undefined ? {} : { todo: c.todo }, async (t) => {
        if (skip) {
          t.skip(skip);
          return;
        }
        for (const [name, why] of Object.entries(runners.missing)) t.diagnostic(`${name} not run: ${why}`);
        const { problems, notes } = await runCase(c, runners.available);
        for (const n of notes) t.diagnostic(n);
        assert.deepEqual(problems, [], `${c.name}\n${c.asm}\n${problems.join("\n")}`);
      });
    }
  });
}
