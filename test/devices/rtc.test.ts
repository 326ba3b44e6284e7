import assert from "node:assert/strict";
import { test } from "node:test";
import { ManualClock } from "../../src/devices/clock.js";
import { CmosRtc } from "../../src/devices/rtc.js";
import { hammer, RecordingIrq } from "./helpers.js";

// 2026-11-25 12:34:56 UTC, a Wednesday.
const EPOCH_MS = Date.UTC(2026, 10, 25, 12, 34, 56);

function rtc() {
  const clock = new ManualClock();
  const irq = new RecordingIrq();
  const r = new CmosRtc(irq, clock, EPOCH_MS);
  const get = (index: number) => {
    r.write(0, 1, index);
    return r.read(1, 1);
  };
  const set = (index: number, value: number) => {
    r.write(0, 1, index);
    r.write(1, 1, value);
  };
  return { r, clock, irq, get, set };
}

test("rtc reads the host time in BCD, 24-hour mode by default", () => {
  const { get } = rtc();
  assert.equal(get(0x00), 0x56);
  assert.equal(get(0x02), 0x34);
  assert.equal(get(0x04), 0x12);
  assert.equal(get(0x06), 0x04); // Wednesday (Sunday = 1)
  assert.equal(get(0x07), 0x25);
  assert.equal(get(0x08), 0x11);
  assert.equal(get(0x09), 0x26);
  assert.equal(get(0x32), 0x20);
  assert.equal(get(0x0d) & 0x80, 0x80);
});

test("rtc time follows the virtual clock", () => {
  const { get, clock } = rtc();
  clock.advance(65e9);
  assert.equal(get(0x00), 0x01);
  assert.equal(get(0x02), 0x36);
});

test("rtc answers in binary when register B.DM is set and in 12-hour mode with the PM bit", () => {
  const { get, set, clock } = rtc();
  set(0x0b, 0x06); // binary, 24h
  assert.equal(get(0x00), 56);
  assert.equal(get(0x09), 26);
  set(0x0b, 0x04); // binary, 12h
  assert.equal(get(0x04), 0x80 | 12);
  clock.advance(3600e9);
  assert.equal(get(0x04), 0x80 | 1);
  set(0x0b, 0x00); // BCD 12h
  assert.equal(get(0x04), 0x81);
});

test("rtc sets UIP in register A during the 244 us before each second's update", () => {
  const { get, clock } = rtc();
  assert.equal(get(0x0a) & 0x80, 0);
  clock.advance(1e9 - 100e3); // 100 us before the next second
  assert.equal(get(0x0a) & 0x80, 0x80);
  assert.equal(get(0x00), 0x56); // still the old second
  clock.advance(200e3);
  assert.equal(get(0x0a) & 0x80, 0);
  assert.equal(get(0x00), 0x57);
  assert.equal(get(0x0a) & 0x7f, 0x26);
});

test("rtc lets the guest set the time with register B.SET and keeps counting from it", () => {
  const { get, set, clock } = rtc();
  set(0x0b, 0x82); // SET, 24h BCD
  set(0x04, 0x23);
  set(0x02, 0x59);
  set(0x00, 0x58);
  clock.advance(5e9);
  assert.equal(get(0x00), 0x58); // frozen while SET
  set(0x0b, 0x02);
  clock.advance(3e9);
  assert.equal(get(0x00), 0x01);
  assert.equal(get(0x02), 0x00);
  assert.equal(get(0x04), 0x00);
  assert.equal(get(0x07), 0x26); // rolled into the next day
});

test("rtc register C reports the update-ended interrupt on IRQ8 and the read clears it", () => {
  const { r, get, set, clock, irq } = rtc();
  set(0x0b, 0x12); // UIE
  const deadline = r.nextDeadlineNs();
  assert.ok(deadline > 0 && deadline <= 1e9 + 1);
  clock.set(deadline);
  r.advance(clock.nowNs());
  assert.equal(irq.level, true);
  assert.equal(get(0x0c) & 0xb0, 0x90); // IRQF | UF (PF too: the 1024 Hz rate runs without PIE)
  assert.equal(irq.level, false);
  assert.equal(get(0x0c), 0x00);
});

test("rtc periodic interrupt fires at the rate of register A", () => {
  const { r, set, get, clock, irq } = rtc();
  set(0x0a, 0x26); // 1024 Hz
  set(0x0b, 0x42); // PIE
  const period = 1e9 / 1024;
  const d = r.nextDeadlineNs();
  assert.ok(Math.abs(d - period) < 1);
  clock.set(d);
  r.advance();
  assert.equal(irq.level, true);
  assert.equal(get(0x0c) & 0xc0, 0xc0);
  set(0x0a, 0x2f); // 2 Hz
  assert.ok(Math.abs(r.nextDeadlineNs() - clock.nowNs() - 5e8) < 1);
});

test("rtc alarm fires at the programmed time, with don't-care fields", () => {
  const { r, set, get, clock, irq } = rtc();
  set(0x01, 0x00); // seconds 00
  set(0x03, 0xc0); // any minute
  set(0x05, 0xc0); // any hour
  set(0x0b, 0x22); // AIE
  clock.advance(3e9);
  r.advance();
  assert.equal(irq.level, false);
  clock.advance(2e9); // 12:35:01 passes 12:35:00
  r.advance();
  assert.equal(irq.level, true);
  assert.equal(get(0x0c) & 0xa0, 0xa0);
});

test("rtc polled flags appear in register C without any interrupt enabled", () => {
  const { get, clock, irq } = rtc();
  clock.advance(2e9);
  assert.equal(get(0x0c) & 0x50, 0x50); // PF (1024 Hz default) and UF
  assert.equal(irq.level, false);
});

test("rtc keeps the NMI disable bit of the index port and stores NVRAM", () => {
  const { r, get, set } = rtc();
  r.write(0, 1, 0x80 | 0x40);
  assert.equal(r.nmiDisabled, true);
  r.write(1, 1, 0xab);
  assert.equal(get(0x40), 0xab);
  assert.equal(r.nmiDisabled, false);
  set(0x7f, 0x12);
  assert.equal(get(0x7f), 0x12);
  assert.equal(r.read(0, 1), 0xff);
});

test("rtc memory size bytes describe the machine's RAM", () => {
  const { r } = rtc();
  r.setMemorySize(512 * 1024 * 1024, 2 * 1024 * 1024 * 1024);
  assert.equal(r.peek(0x15) | (r.peek(0x16) << 8), 640);
  assert.equal(r.peek(0x17) | (r.peek(0x18) << 8), 0xffff);
  assert.equal(r.peek(0x34) | (r.peek(0x35) << 8), (512 - 16) * 16);
  assert.equal(r.peek(0x5b) | (r.peek(0x5c) << 8) | (r.peek(0x5d) << 16), 2 * 1024 * 16);
});

test("rtc survives garbage written to every register and index", () => {
  const { r, clock } = rtc();
  for (let i = 0; i < 5; i++) {
    hammer(r, 2, 5000, i + 1);
    clock.advance(1e9);
    r.advance();
    assert.ok(Number.isFinite(r.nextDeadlineNs()) || r.nextDeadlineNs() === Number.POSITIVE_INFINITY);
  }
});

test("rtc takes a 16-bit write to the index port as index then data", () => {
  const { r, get } = rtc();
  r.write(0, 2, (0x5a << 8) | 0x41);
  assert.equal(get(0x41), 0x5a);
});
