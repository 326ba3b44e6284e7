import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type HealthState,
  HealthMonitor,
  healthSuffix,
  nextHealth,
  type ProbeOutcome,
  probeArgv,
} from "../../../src/container/manager/health.js";

const pass = { Start: "", End: "", ExitCode: 0, Output: "ok" };
const failure = { Start: "", End: "", ExitCode: 1, Output: "down" };
const starting: HealthState = { Status: "starting", FailingStreak: 0, Log: [] };

test("health: a pass is healthy, Retries failures in a row are unhealthy, a pass clears the streak", () => {
  let h = nextHealth(starting, failure, false, 2);
  assert.deepEqual([h.Status, h.FailingStreak], ["starting", 1]);
  h = nextHealth(h, failure, false, 2);
  assert.deepEqual([h.Status, h.FailingStreak], ["unhealthy", 2]);
  h = nextHealth(h, pass, false, 2);
  assert.deepEqual([h.Status, h.FailingStreak], ["healthy", 0]);
  h = nextHealth(h, failure, false, 2);
  assert.deepEqual([h.Status, h.FailingStreak], ["healthy", 1], "one failure does not make it unhealthy");
});

test("health: failures in the start period do not count; the log keeps the last 5", () => {
  let h = starting;
  for (let i = 0; i < 7; i++) h = nextHealth(h, { ...failure, Output: String(i) }, true, 1);
  assert.deepEqual([h.Status, h.FailingStreak], ["starting", 0]);
  assert.deepEqual(
    h.Log.map((l) => l.Output),
    ["2", "3", "4", "5", "6"],
  );
});

test("health: probe argv of CMD and CMD-SHELL; NONE and no check run nothing", () => {
  assert.deepEqual(probeArgv({ Test: ["CMD", "test", "-f", "/x"] }), ["test", "-f", "/x"]);
  assert.deepEqual(probeArgv({ Test: ["CMD-SHELL", "wget -q -O- localhost || exit 1"] }), [
    "/bin/sh",
    "-c",
    "wget -q -O- localhost || exit 1",
  ]);
  assert.equal(probeArgv({ Test: ["NONE"] }), undefined);
  assert.equal(probeArgv(undefined), undefined);
  assert.equal(healthSuffix({ ...starting }), " (health: starting)");
  assert.equal(healthSuffix({ ...starting, Status: "unhealthy" }), " (unhealthy)");
  assert.equal(healthSuffix(undefined), "");
});

test("health monitor: publishes starting, then each probe's effect, with the configured timeout", async () => {
  const published: HealthState[] = [];
  const outcomes: ProbeOutcome[] = [
    { exitCode: 1, output: "no" },
    { exitCode: 0, output: "yes" },
    { exitCode: -1, output: "Health check exceeded timeout (2s)" },
  ];
  const timeouts: number[] = [];
  let clock = 0;
  const m = new HealthMonitor({
    config: { Test: ["CMD", "true"], Interval: 3600e9, Timeout: 2e9, Retries: 1, StartPeriod: 10e9 },
    probe: async (argv, timeoutMs) => {
      assert.deepEqual(argv, ["true"]);
      timeouts.push(timeoutMs);
      return outcomes.shift()!;
    },
    publish: (h) => published.push(h),
    now: () => clock,
  });
  m.start();
  assert.equal(published[0]!.Status, "starting");
  assert.equal((await m.runOnce()).Status, "starting", "a failure within the start period");
  clock = 11_000;
  assert.equal((await m.runOnce()).Status, "healthy");
  const last = await m.runOnce();
  assert.equal(last.Status, "unhealthy", "Retries=1: one failure after the start period");
  assert.equal(last.Log.at(-1)!.ExitCode, -1);
  assert.deepEqual(timeouts, [2000, 2000, 2000]);
  m.stop();
  assert.equal(published.length, 4);
});
