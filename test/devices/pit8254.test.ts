import assert from "node:assert/strict";
import { test } from "node:test";
import { PortBus } from "../../src/bus/port_bus.js";
import { ManualClock } from "../../src/devices/clock.js";
import { PIT_HZ, Pit8254 } from "../../src/devices/pit8254.js";
import { PIT_PORT, SYSTEM_CONTROL_PORT_B } from "../../src/memory/layout.js";
import { hammer, RecordingIrq } from "./helpers.js";

const NS_PER_TICK = 1e9 / PIT_HZ;

function pit() {
  const clock = new ManualClock();
  const irq = new RecordingIrq();
  const p = new Pit8254(clock, irq);
  const bus = new PortBus();
  bus.register(PIT_PORT, 4, p);
  bus.register(SYSTEM_CONTROL_PORT_B, 1, p.portB);
  return { clock, irq, p, bus };
}

test("pit8254 mode 2 on counter 0 raises IRQ0 edges at the programmed rate (Linux's periodic tick)", () => {
  const { clock, irq, p, bus } = pit();
  const latch = Math.round(PIT_HZ / 100); // 100 Hz, as Linux's PIT clockevent programs it
  bus.write(0x43, 1, 0x34); // counter 0, LSB+MSB, mode 2
  bus.write(0x40, 1, latch & 0xff);
  bus.write(0x40, 1, latch >> 8);
  const first = p.nextDeadlineNs();
  assert.ok(Math.abs(first - latch * NS_PER_TICK) < 2, `first deadline ${first}`);
  clock.set(first - 10);
  p.advance();
  assert.equal(irq.rises, 0);
  clock.set(first);
  p.advance();
  assert.equal(irq.rises, 1);
  const second = p.nextDeadlineNs();
  assert.ok(Math.abs(second - 2 * latch * NS_PER_TICK) < 2);
  // Missing several periods coalesces into one edge.
  clock.advance(50.1e6); // past edges 2..6
  p.advance();
  assert.equal(irq.rises, 2);
  assert.equal(p.stats.coalescedEdges, 4);
});

test("pit8254 mode 0 raises one IRQ0 edge at terminal count (Linux's oneshot clockevent)", () => {
  const { clock, irq, p, bus } = pit();
  bus.write(0x43, 1, 0x30);
  bus.write(0x40, 1, 100);
  bus.write(0x40, 1, 0);
  assert.equal(p.out(0), false);
  clock.set(p.nextDeadlineNs());
  p.advance();
  assert.equal(irq.rises, 1);
  assert.equal(p.nextDeadlineNs(), Number.POSITIVE_INFINITY);
  clock.advance(1e9);
  p.advance();
  assert.equal(irq.rises, 1);
  bus.write(0x43, 1, 0x30); // reprogramming drops OUT and the line
  assert.equal(irq.level, false);
});

test("pit8254 counter latch freezes the value read as LSB then MSB", () => {
  const { clock, bus } = pit();
  bus.write(0x43, 1, 0x34);
  bus.write(0x40, 1, 0x00);
  bus.write(0x40, 1, 0x10); // 0x1000
  clock.advance(100 * NS_PER_TICK + 1);
  bus.write(0x43, 1, 0x00); // latch counter 0
  clock.advance(50 * NS_PER_TICK);
  const lsb = bus.read(0x40, 1);
  const msb = bus.read(0x40, 1);
  assert.equal((msb << 8) | lsb, 0x1000 - 100);
  // Unlatched reads are live.
  const live = bus.read(0x40, 1) | (bus.read(0x40, 1) << 8);
  assert.equal(live, 0x1000 - 150);
});

test("pit8254 read-back command latches status and count", () => {
  const { bus } = pit();
  bus.write(0x43, 1, 0xb0); // counter 2, LSB+MSB, mode 0
  bus.write(0x43, 1, 0xc0 | 0x08); // read-back count and status of counter 2
  assert.equal(bus.read(0x42, 1), 0x40 | 0x30); // OUT low, null count, LSB+MSB, mode 0
  bus.write(0x42, 1, 0x34);
  bus.write(0x42, 1, 0x12);
  bus.write(0x43, 1, 0xc0 | 0x20 | 0x08); // status only
  assert.equal(bus.read(0x42, 1), 0x30);
});

test("pit8254 port 0x61 gates counter 2 and shows OUT2 in bit 5 (pit_calibrate_tsc)", () => {
  const { clock, bus } = pit();
  bus.write(0x61, 1, (bus.read(0x61, 1) & ~0x02) | 0x01);
  const latch = Math.floor(PIT_HZ / 100); // CAL_LATCH: 10 ms
  bus.write(0x43, 1, 0xb0);
  bus.write(0x42, 1, latch & 0xff);
  bus.write(0x42, 1, latch >> 8);
  assert.equal(bus.read(0x61, 1) & 0x20, 0);
  clock.advance(9.99e6);
  assert.equal(bus.read(0x61, 1) & 0x20, 0);
  clock.advance(0.02e6);
  assert.equal(bus.read(0x61, 1) & 0x20, 0x20);
  assert.equal(bus.read(0x61, 1) & 0x03, 0x01);
});

test("pit8254 counter 2 does not count while gate 2 is low in mode 0", () => {
  const { clock, bus, p } = pit();
  bus.write(0x61, 1, 0x00);
  bus.write(0x43, 1, 0xb0);
  bus.write(0x42, 1, 10);
  bus.write(0x42, 1, 0);
  clock.advance(1e6);
  assert.equal(p.out(2), false);
  bus.write(0x61, 1, 0x01);
  clock.advance(5 * NS_PER_TICK + 1);
  assert.equal(bus.read(0x42, 1), 5);
});

test("pit8254 refresh bit of port 0x61 toggles with time", () => {
  const { clock, bus } = pit();
  const a = bus.read(0x61, 1) & 0x10;
  clock.advance(15085);
  assert.notEqual(bus.read(0x61, 1) & 0x10, a);
});

test("pit8254 runs Linux's quick_pit_calibrate to the TSC frequency within 0.1%", () => {
  // The algorithm of arch/x86/kernel/tsc.c quick_pit_calibrate, with a TSC derived from the same
  // clock at 2.5 GHz and each port read taking 1 us of virtual time (a slow, software CPU).
  const { clock, bus } = pit();
  const TSC_HZ = 2.5e9;
  const inb = (port: number) => {
    clock.advance(1000);
    return bus.read(port, 1);
  };
  const outb = (value: number, port: number) => {
    clock.advance(1000);
    bus.write(port, 1, value);
  };
  const getCycles = () => Math.floor((clock.nowNs() * TSC_HZ) / 1e9);
  const verifyMsb = (val: number) => {
    inb(0x42);
    return inb(0x42) === val;
  };
  const expectMsb = (val: number) => {
    let tsc = 0;
    let prev = 0;
    let count = 0;
    for (; count < 50000; count++) {
      if (!verifyMsb(val)) break;
      prev = tsc;
      tsc = getCycles();
    }
    return { ok: count > 5, tsc, delta: getCycles() - prev };
  };
  const MAX = Math.floor((50 * PIT_HZ) / 1000 / 256);
  outb((inb(0x61) & ~0x02) | 0x01, 0x61);
  outb(0xb0, 0x43);
  outb(0xff, 0x42);
  outb(0xff, 0x42);
  verifyMsb(0);
  const first = expectMsb(0xff);
  assert.ok(first.ok, "MSB 0xff seen more than 5 times");
  let khz = 0;
  for (let i = 1; i <= MAX; i++) {
    const e = expectMsb(0xff - i);
    if (!e.ok) break;
    const delta = e.tsc - first.tsc;
    if (i === 1 && first.delta + e.delta >= (delta * MAX) / 2048) assert.fail("calibration aborted");
    if (first.delta + e.delta >= delta / 2048) continue;
    if (!verifyMsb(0xfe - i)) break;
    khz = (delta * PIT_HZ) / (i * 256 * 1000);
    break;
  }
  assert.ok(khz > 0, "calibration succeeded");
  assert.ok(Math.abs(khz - TSC_HZ / 1000) / (TSC_HZ / 1000) < 0.001, `got ${khz} kHz`);
});

test("pit8254 passes Linux's pit_calibrate_tsc (10 ms, >= 1000 loops, steady loop cost)", () => {
  // arch/x86/kernel/tsc.c pit_calibrate_tsc(CAL_LATCH, CAL_MS, CAL_PIT_LOOPS), each loop
  // iteration (inb 0x61 + rdtsc) costing 0.5 us of virtual time, TSC at 1.5 GHz.
  const { clock, bus } = pit();
  const TSC_HZ = 1.5e9;
  const getCycles = () => Math.floor((clock.nowNs() * TSC_HZ) / 1e9);
  const latch = Math.floor(PIT_HZ / 100);
  bus.write(0x61, 1, (bus.read(0x61, 1) & ~0x02) | 0x01);
  bus.write(0x43, 1, 0xb0);
  bus.write(0x42, 1, latch & 0xff);
  bus.write(0x42, 1, latch >> 8);
  let tsc = getCycles();
  const t1 = tsc;
  let t2 = tsc;
  let pitcnt = 0;
  let tscmin = Number.MAX_SAFE_INTEGER;
  let tscmax = 0;
  for (;;) {
    clock.advance(500);
    if ((bus.read(0x61, 1) & 0x20) !== 0) break;
    t2 = getCycles();
    const delta = t2 - tsc;
    tsc = t2;
    tscmin = Math.min(tscmin, delta);
    tscmax = Math.max(tscmax, delta);
    pitcnt++;
  }
  assert.ok(pitcnt >= 1000, `pitcnt ${pitcnt}`);
  assert.ok(tscmax <= 10 * tscmin);
  const khz = (t2 - t1) / 10;
  assert.ok(Math.abs(khz - TSC_HZ / 1000) / (TSC_HZ / 1000) < 0.001, `got ${khz} kHz`);
});

test("pit8254 mode 3 square wave: OUT high for the first half period", () => {
  const { clock, bus, p } = pit();
  bus.write(0x43, 1, 0x36);
  bus.write(0x40, 1, 100);
  bus.write(0x40, 1, 0);
  clock.advance(10 * NS_PER_TICK + 1);
  assert.equal(p.out(0), true);
  assert.equal(bus.read(0x40, 1), 100 - 20);
  clock.advance(50 * NS_PER_TICK);
  assert.equal(p.out(0), false);
});

test("pit8254 LSB-only and MSB-only access modes and BCD counting", () => {
  const { clock, bus } = pit();
  bus.write(0x43, 1, 0x50); // counter 1, LSB only, mode 0
  bus.write(0x41, 1, 0x80);
  clock.advance(16 * NS_PER_TICK + 1);
  assert.equal(bus.read(0x41, 1), 0x80 - 16);
  bus.write(0x43, 1, 0x61); // counter 1, MSB only, mode 0, BCD
  bus.write(0x41, 1, 0x10); // 1000 in BCD
  clock.advance(1 * NS_PER_TICK + 1);
  assert.equal(bus.read(0x41, 1), 0x09); // 0999: MSB 09
});

test("pit8254 mode 1 and 5 wait for a gate trigger on counter 2", () => {
  const { clock, bus, p } = pit();
  bus.write(0x43, 1, 0x92); // counter 2, LSB, mode 1
  bus.write(0x42, 1, 10);
  clock.advance(100 * NS_PER_TICK);
  assert.equal(p.out(2), true); // not triggered yet
  bus.write(0x61, 1, 0x01); // rising gate triggers
  clock.advance(3 * NS_PER_TICK + 1);
  assert.equal(p.out(2), false);
  clock.advance(10 * NS_PER_TICK);
  assert.equal(p.out(2), true);
});

test("pit8254 survives garbage written to every port", () => {
  const { clock, p } = pit();
  for (let i = 0; i < 5; i++) {
    hammer(p, 4, 5000, 10 + i);
    hammer(p.portB, 1, 1000, 20 + i);
    clock.advance(1e6);
    p.advance();
    const d = p.nextDeadlineNs();
    assert.ok(!Number.isNaN(d));
  }
});
