import assert from "node:assert/strict";
import { test } from "node:test";
import { parseFlags } from "../../src/cli/runtime.js";
import { parseSignal } from "../../src/container/signals.js";

test("vessel-runc flags: runc's spellings --f v, --f=v, -f, short aliases, repeated values", () => {
  const spec = { bundle: "string", detach: "bool", env: "multi", "pid-file": "string" } as const;
  const p = parseFlags(
    ["--bundle", "/b", "-pid-file=/p", "-d", "-e", "A=1", "--env=B=2", "id"],
    { ...spec },
    false,
  );
  assert.deepEqual(p.flags, { bundle: "/b", "pid-file": "/p", detach: true, env: ["A=1", "B=2"] });
  assert.deepEqual(p.args, ["id"]);
  assert.deepEqual(parseFlags(["-b", "x", "id"], { ...spec }, false).flags, { bundle: "x" });
  assert.throws(() => parseFlags(["--nope"], { ...spec }, false), /flag provided but not defined: -nope/);
  assert.throws(() => parseFlags(["--bundle"], { ...spec }, false), /needs an argument/);
});

test("vessel-runc flags: global flags stop at the command; exec keeps the command's own flags", () => {
  const g = parseFlags(
    ["--root", "/r", "--log-format=json", "exec", "-t", "id", "sh", "-c", "x"],
    { root: "string", "log-format": "string" },
    true,
  );
  assert.deepEqual(g.flags, { root: "/r", "log-format": "json" });
  assert.deepEqual(g.args, ["exec", "-t", "id", "sh", "-c", "x"]);
});

test("signals are taken by name, with or without SIG, or by number", () => {
  assert.equal(parseSignal("KILL"), 9);
  assert.equal(parseSignal("SIGTERM"), 15);
  assert.equal(parseSignal("term"), 15);
  assert.equal(parseSignal("9"), 9);
  assert.equal(parseSignal(2), 2);
  assert.throws(() => parseSignal("SIGNOPE"), /unknown signal "SIGNOPE"/);
  assert.throws(() => parseSignal("99"), /invalid signal/);
});
