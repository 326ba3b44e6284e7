import assert from "node:assert/strict";
import { test } from "node:test";
import { PortBus } from "../../src/bus/port_bus.js";
import { ManualClock } from "../../src/devices/clock.js";
import { DebugExit } from "../../src/devices/debug_exit.js";
import { DEBUG_EXIT_PORT } from "../../src/memory/layout.js";
import { hammer } from "./helpers.js";

function setup() {
  const clock = new ManualClock(1000);
  const exits: number[] = [];
  const marks: number[] = [];
  const d = new DebugExit(
    clock,
    (s) => exits.push(s),
    (ns) => marks.push(ns),
  );
  const bus = new PortBus();
  bus.register(DEBUG_EXIT_PORT, 2, d);
  return { clock, exits, marks, d, bus };
}

test("debug-exit reports the userspace marker with the machine clock's time", () => {
  const { clock, marks, bus, d } = setup();
  clock.advance(5e9);
  bus.write(DEBUG_EXIT_PORT, 1, 0);
  assert.deepEqual(marks, [5e9 + 1000]);
  assert.equal(d.userspaceStartedNs, 5e9 + 1000);
});

test("debug-exit passes the exit status written to port +1", () => {
  const { exits, bus, d } = setup();
  bus.write(DEBUG_EXIT_PORT + 1, 1, 0x12a); // only the low byte counts
  assert.deepEqual(exits, [0x2a]);
  assert.equal(d.exitStatus, 0x2a);
});

test("debug-exit reads all ones and survives garbage", () => {
  const { bus, d } = setup();
  assert.equal(bus.read(DEBUG_EXIT_PORT, 1), 0xff);
  assert.equal(bus.read(DEBUG_EXIT_PORT + 1, 2), 0xffff);
  hammer(d, 2, 2000);
});
