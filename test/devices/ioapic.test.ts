import assert from "node:assert/strict";
import { test } from "node:test";
import { IoApic } from "../../src/devices/ioapic.js";
import type { ApicMessage } from "../../src/devices/lapic.js";
import { captureDeviceLog, hammer } from "./helpers.js";

function ioapic() {
  const sent: ApicMessage[] = [];
  const io = new IoApic((m) => sent.push(m));
  const select = (index: number) => io.write(0x00, 4, index);
  const get = (index: number) => {
    select(index);
    return io.read(0x10, 4);
  };
  const set = (index: number, value: number) => {
    select(index);
    io.write(0x10, 4, value);
  };
  return { io, sent, get, set };
}

test("ioapic reports version 0x11 with 24 redirection entries, all masked at reset", () => {
  const { get } = ioapic();
  assert.equal(get(0x01), 0x00170011);
  for (let pin = 0; pin < 24; pin++) assert.equal(get(0x10 + 2 * pin) & 0x10000, 0x10000);
});

test("ioapic delivers an edge on an unmasked pin to the programmed vector and destination", () => {
  const { io, sent, set } = ioapic();
  set(0x10 + 2 * 4, 0x34); // pin 4: vector 0x34, fixed, physical, edge, unmasked
  set(0x11 + 2 * 4, 0x00000000);
  io.setIrq(4, true);
  io.setIrq(4, true);
  assert.deepEqual(sent, [{ vector: 0x34, deliveryMode: 0, logical: false, destination: 0, level: false }]);
  io.setIrq(4, false);
  io.setIrq(4, true);
  assert.equal(sent.length, 2);
});

test("ioapic remembers an edge that arrives while masked and delivers it on unmask", () => {
  const { io, sent, set } = ioapic();
  set(0x10, 0x10030);
  io.setIrq(0, true);
  assert.equal(sent.length, 0);
  set(0x10, 0x30);
  assert.equal(sent.length, 1);
});

test("ioapic level pins set remote IRR and redeliver after the EOI while still asserted", () => {
  const { io, sent, set, get } = ioapic();
  set(0x10 + 2 * 9, 0x8000 | 0x49); // level, vector 0x49
  io.setIrq(9, true);
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.level, true);
  assert.equal(get(0x10 + 2 * 9) & 0x4000, 0x4000);
  io.setIrq(9, true);
  assert.equal(sent.length, 1); // remote IRR blocks
  io.eoi(0x49);
  assert.equal(sent.length, 2); // still asserted: again
  io.setIrq(9, false);
  io.eoi(0x49);
  assert.equal(sent.length, 2);
  assert.equal(get(0x10 + 2 * 9) & 0x4000, 0);
});

test("ioapic keeps delivery status and remote IRR read-only", () => {
  const { get, set } = ioapic();
  set(0x10, 0xffffffff);
  assert.equal(get(0x10) & 0x5000, 0);
});

test("ioapic survives garbage in IOREGSEL, IOWIN and the rest of the window", () => {
  const log = captureDeviceLog();
  try {
    const { io } = ioapic();
    hammer(io, 0x40, 20000, 3);
    for (let pin = -2; pin < 30; pin++) io.setIrq(pin, pin % 2 === 0);
    for (let v = 0; v < 256; v++) io.eoi(v);
  } finally {
    log.restore();
  }
});
