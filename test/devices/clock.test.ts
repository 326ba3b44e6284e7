import assert from "node:assert/strict";
import { test } from "node:test";
import { HostClock, InstructionClock, ManualClock } from "../../src/devices/clock.js";

test("host clock starts near zero and is monotonic", () => {
  const c = new HostClock();
  const before = performance.now();
  const c2 = new HostClock();
  const a = c2.nowNs();
  const b = c2.nowNs();
  // Near zero: no more than the time since the clock was made.
  assert.ok(a >= 0 && a <= (performance.now() - before) * 1e6 + 1);
  assert.ok(b >= a);
  assert.ok(c.nowNs() >= 0);
});

test("host clock stands still while paused", () => {
  const c = new HostClock();
  c.pause();
  const a = c.nowNs();
  const until = Date.now() + 5;
  while (Date.now() < until) {}
  assert.equal(c.nowNs(), a);
  const resumedAt = performance.now();
  c.resume();
  const b = c.nowNs();
  const sinceResumeNs = (performance.now() - resumedAt) * 1e6;
  // The paused stretch is not counted: after resume the clock has moved on from `a` by at most the
  // time since resume, however long the pause took on a loaded host.
  assert.ok(b >= a, `${b} < ${a}`);
  assert.ok(
    b - a <= sinceResumeNs + 1,
    `clock moved ${b - a} ns, only ${sinceResumeNs} ns passed since resume`,
  );
});

test("manual clock moves only forward", () => {
  const c = new ManualClock(10);
  c.advance(5);
  c.advance(-100);
  c.set(3);
  assert.equal(c.nowNs(), 15);
  c.set(100);
  assert.equal(c.nowNs(), 100);
});

test("instruction clock counts retired instructions at its rate and jumps forward when idle", () => {
  let n = 100;
  const c = new InstructionClock(() => n, 2);
  assert.equal(c.nowNs(), 0);
  n += 50;
  assert.equal(c.nowNs(), 100);
  c.idleUntil(1000);
  assert.equal(c.nowNs(), 1000);
  c.idleUntil(10); // never backwards
  assert.equal(c.nowNs(), 1000);
  c.setRate(0.5);
  n += 100;
  assert.equal(c.nowNs(), 1050);
  c.setRate(-1); // ignored
  assert.equal(c.rate, 0.5);
});
