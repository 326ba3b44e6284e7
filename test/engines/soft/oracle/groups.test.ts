/**
 * Machine-code tests for every instruction group (cases.ts), run on the software CPU (each
 * technique) and on every oracle this host has (the hardware through KVM or as a host process,
 * QEMU's user-mode emulator): each runner must meet the SDM's expected values, and the runners
 * must agree with each other. With no oracle at all the cases fail, saying what to install; a
 * case every oracle here sits out is checked against the SDM's values alone (and says so).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GROUPS } from "./cases.js";
import { loadRunners, noOracleMessage, runCase, skipReason } from "./harness.js";

const runners = await loadRunners();
const skip = skipReason(runners);
const noOracle = runners.available.every((r) => r.kind === "tested") ? noOracleMessage(runners, []) : null;

for (const [group, cases] of Object.entries(GROUPS)) {
  describe(`oracle: ${group}`, () => {
    for (const c of cases) {
      it(c.name, c.todo === undefined ? {} : { todo: c.todo }, async (t) => {
        if (skip) {
          t.skip(skip);
          return;
        }
        assert.equal(noOracle, null, noOracle ?? "");
        for (const [name, why] of Object.entries(runners.missing)) t.diagnostic(`${name} not run: ${why}`);
        const { problems, notes, ran, oracles } = await runCase(c, runners.available);
        for (const n of notes) t.diagnostic(n);
        t.diagnostic(
          `ran on ${ran.join(", ")}${oracles === 0 ? ": checked against the SDM's values only" : ""}`,
        );
        assert.deepEqual(problems, [], `${c.name}\n${c.asm}\n${problems.join("\n")}`);
      });
    }
  });
}
