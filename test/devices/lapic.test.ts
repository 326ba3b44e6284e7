import assert from "node:assert/strict";
import { test } from "node:test";
import { ManualClock } from "../../src/devices/clock.js";
import { LocalApic } from "../../src/devices/lapic.js";
import { Pic8259Pair } from "../../src/devices/pic8259.js";
import { captureDeviceLog, hammer } from "./helpers.js";

const ID = 0x20;
const VERSION = 0x30;
const TPR = 0x80;
const PPR = 0xa0;
const EOI = 0xb0;
const LDR = 0xd0;
const DFR = 0xe0;
const SVR = 0xf0;
const ISR0 = 0x100;
const TMR0 = 0x180;
const IRR0 = 0x200;
const ESR = 0x280;
const ICR_LO = 0x300;
const ICR_HI = 0x310;
const LVT_TIMER = 0x320;
const LVT_LINT0 = 0x350;
const LVT_LINT1 = 0x360;
const LVT_ERROR = 0x370;
const TIMER_INIT = 0x380;
const TIMER_CUR = 0x390;
const TIMER_DIV = 0x3e0;

function apic(opts: { tscHz?: number } = {}) {
  const clock = new ManualClock();
  const tscHz = opts.tscHz;
  const a = new LocalApic({
    clock,
    ...(tscHz !== undefined ? { nsFromTsc: (t: bigint) => (Number(t) * 1e9) / tscHz } : {}),
  });
  const r = (off: number) => a.read(off, 4);
  const w = (off: number, v: number) => a.write(off, 4, v);
  w(SVR, 0x1ff); // software enable, spurious vector 0xff
  return { clock, a, r, w };
}

const bit = (bank: number, v: number, read: (o: number) => number) =>
  (read(bank + (v >> 5) * 0x10) >>> (v & 31)) & 1;

test("lapic identifies itself: ID 0, version 0x14 with six LVT entries", () => {
  const { r, a } = apic();
  assert.equal(r(ID), 0);
  assert.equal(r(VERSION), 0x00050014);
  assert.equal(a.readApicBase(), 0xfee00900);
});

test("lapic delivers a fixed interrupt by priority and moves it from IRR to ISR until EOI", () => {
  const { a, r, w } = apic();
  a.deliver({ vector: 0x31, deliveryMode: 0, logical: false, destination: 0, level: false });
  a.deliver({ vector: 0x61, deliveryMode: 0, logical: false, destination: 0, level: false });
  assert.equal(bit(IRR0, 0x31, r), 1);
  assert.equal(a.hasInterrupt(), true);
  assert.equal(a.acknowledgeInterrupt(), 0x61);
  assert.equal(bit(ISR0, 0x61, r), 1);
  assert.equal(r(PPR), 0x60);
  assert.equal(a.hasInterrupt(), false); // 0x31 is below the in-service class
  w(EOI, 0);
  assert.equal(a.hasInterrupt(), true);
  assert.equal(a.acknowledgeInterrupt(), 0x31);
});

test("lapic TPR holds back interrupts of its class and below", () => {
  const { a, w, r } = apic();
  w(TPR, 0x50);
  a.deliver({ vector: 0x45, deliveryMode: 0, logical: false, destination: 0, level: false });
  assert.equal(a.hasInterrupt(), false);
  assert.equal(r(PPR), 0x50);
  w(TPR, 0x30);
  assert.equal(a.hasInterrupt(), true);
});

test("lapic ignores messages for another APIC and matches flat logical destinations", () => {
  const { a, w } = apic();
  a.deliver({ vector: 0x40, deliveryMode: 0, logical: false, destination: 3, level: false });
  assert.equal(a.hasInterrupt(), false);
  w(DFR, 0xffffffff);
  w(LDR, 0x01000000);
  a.deliver({ vector: 0x40, deliveryMode: 0, logical: true, destination: 0x02, level: false });
  assert.equal(a.hasInterrupt(), false);
  a.deliver({ vector: 0x40, deliveryMode: 0, logical: true, destination: 0x03, level: false });
  assert.equal(a.hasInterrupt(), true);
});

test("lapic broadcasts EOI of level-triggered vectors (TMR) to the IOAPIC", () => {
  const { a, w, r } = apic();
  const eois: number[] = [];
  a.onEoi = (v) => eois.push(v);
  a.deliver({ vector: 0x41, deliveryMode: 0, logical: false, destination: 0, level: true });
  assert.equal(bit(TMR0, 0x41, r), 1);
  a.acknowledgeInterrupt();
  w(EOI, 0);
  assert.deepEqual(eois, [0x41]);
  a.deliver({ vector: 0x42, deliveryMode: 0, logical: false, destination: 0, level: false });
  a.acknowledgeInterrupt();
  w(EOI, 0);
  assert.deepEqual(eois, [0x41]);
});

test("lapic self-IPI through the ICR shorthand raises the vector", () => {
  const { a, w } = apic();
  w(ICR_HI, 0);
  w(ICR_LO, 0x40000 | 0xf6); // self, fixed, vector 0xf6 (Linux's irq_work vector)
  assert.equal(a.acknowledgeInterrupt(), 0xf6);
  w(ICR_LO, 0x400 | 0x4000); // NMI to destination 0 (ourselves)
  assert.equal(a.hasNmi(), true);
  a.acknowledgeNmi();
  assert.equal(a.hasNmi(), false);
  w(ICR_LO, 0x500 | 0xc0000); // INIT to all others: nobody there
  assert.equal(a.stats.ipisIgnored, 1);
});

test("lapic one-shot timer counts down at bus/divide and fires once", () => {
  const { a, w, r, clock } = apic();
  w(TIMER_DIV, 0x3); // divide by 16
  w(LVT_TIMER, 0xec); // one-shot, vector 0xec
  w(TIMER_INIT, 1000);
  assert.equal(a.nextDeadlineNs(), 16000);
  clock.advance(8000);
  assert.equal(r(TIMER_CUR), 500);
  clock.set(16000);
  a.advance(clock.nowNs());
  assert.equal(r(TIMER_CUR), 0);
  assert.equal(a.acknowledgeInterrupt(), 0xec);
  clock.advance(1e6);
  a.advance(clock.nowNs());
  assert.equal(a.hasInterrupt(), false);
  assert.equal(a.nextDeadlineNs(), Number.POSITIVE_INFINITY);
});

test("lapic periodic timer reloads and keeps firing", () => {
  const { a, w, r, clock } = apic();
  w(TIMER_DIV, 0xb); // divide by 1
  w(LVT_TIMER, 0x20000 | 0xef);
  w(TIMER_INIT, 1000);
  for (let i = 1; i <= 3; i++) {
    assert.equal(a.nextDeadlineNs(), i * 1000);
    clock.set(i * 1000);
    a.advance(clock.nowNs());
    assert.equal(a.acknowledgeInterrupt(), 0xef);
    w(EOI, 0);
  }
  clock.advance(250);
  assert.equal(r(TIMER_CUR), 750);
});

test("lapic masked timer does not interrupt", () => {
  const { a, w, clock } = apic();
  w(LVT_TIMER, 0x10000 | 0xef);
  w(TIMER_INIT, 10);
  clock.advance(1e6);
  a.advance(clock.nowNs());
  assert.equal(a.hasInterrupt(), false);
  assert.equal(a.nextDeadlineNs(), Number.POSITIVE_INFINITY);
});

test("lapic TSC-deadline timer fires when the TSC passes the deadline, if offered", () => {
  const { a, w, clock } = apic({ tscHz: 2e9 });
  assert.equal(a.tscDeadlineSupported, true);
  w(LVT_TIMER, 0x40000 | 0xec);
  a.writeTscDeadline(2000n); // 1 us at 2 GHz
  assert.equal(a.nextDeadlineNs(), 1000);
  clock.set(1000);
  a.advance(clock.nowNs());
  assert.equal(a.acknowledgeInterrupt(), 0xec);
  assert.equal(a.readTscDeadline(), 0n);
  const plain = apic();
  plain.w(LVT_TIMER, 0x40000 | 0xec);
  assert.equal((plain.r(LVT_TIMER) >> 17) & 3, 0); // not offered: one-shot
});

test("lapic passes the 8259's interrupts through LINT0 in ExtINT mode (virtual wire at reset)", () => {
  const clock = new ManualClock();
  const pic = new Pic8259Pair();
  pic.master.write(0, 1, 0x11);
  pic.master.write(1, 1, 0x30);
  pic.master.write(1, 1, 0x04);
  pic.master.write(1, 1, 0x01);
  const a = new LocalApic({ clock, extInt: pic });
  pic.setIrq(0, true);
  assert.equal(a.hasInterrupt(), true); // SVR still disabled: virtual wire works anyway
  assert.equal(a.acknowledgeInterrupt(), 0x30);
  pic.master.write(0, 1, 0x20); // EOI to the PIC
  a.write(SVR, 4, 0x1ff);
  a.write(LVT_LINT0, 4, 0x10700); // masked ExtINT, as Linux leaves it in IOAPIC mode
  pic.setIrq(1, true);
  assert.equal(a.hasInterrupt(), false);
  a.writeApicBase(0xfee00000); // hardware disable: INTR straight to the CPU
  assert.equal(a.hasInterrupt(), true);
});

test("lapic LINT1 in NMI mode raises an NMI on a rising edge", () => {
  const { a, w } = apic();
  w(LVT_LINT1, 0x400);
  a.setLint1(true);
  a.setLint1(true);
  assert.equal(a.hasNmi(), true);
  a.acknowledgeNmi();
  assert.equal(a.hasNmi(), false);
});

test("lapic reports an illegal vector in ESR after the ESR write, and through LVT error", () => {
  const { a, w, r } = apic();
  w(LVT_ERROR, 0xfe);
  w(ICR_LO, 0x40000 | 0x05);
  w(ESR, 0);
  assert.equal(r(ESR) & 0x20, 0x20);
  assert.equal(a.acknowledgeInterrupt(), 0xfe);
});

test("lapic software disable masks every LVT and refuses fixed interrupts", () => {
  const { a, w, r } = apic();
  w(LVT_TIMER, 0xec);
  w(SVR, 0xff);
  assert.equal(r(LVT_TIMER) & 0x10000, 0x10000);
  w(LVT_TIMER, 0xec);
  assert.equal(r(LVT_TIMER) & 0x10000, 0x10000);
  a.deliver({ vector: 0x40, deliveryMode: 0, logical: false, destination: 0, level: false });
  assert.equal(a.hasInterrupt(), false);
});

test("lapic answers a vanished interrupt with the spurious vector", () => {
  const { a, w } = apic();
  w(SVR, 0x1f7);
  assert.equal(a.acknowledgeInterrupt(), 0xf7);
  assert.equal(a.stats.spurious, 1);
});

test("lapic ignores non-32-bit writes and survives garbage in every register", () => {
  const log = captureDeviceLog();
  try {
    const { a, w, r, clock } = apic();
    a.write(TPR, 1, 0xff);
    assert.equal(r(TPR), 0);
    assert.equal(a.read(VERSION + 2, 1), 0x05);
    const rnd = (seed: number) => () => (seed = (seed * 1103515245 + 12345) >>> 0);
    const next = rnd(7);
    for (let i = 0; i < 20000; i++) {
      const off = (next() % 0x400) & ~0xf;
      if (off === 0x300) continue; // keep IPIs out of the soup below; tested above
      w(off, next());
      r(off);
    }
    hammer(a, 0x1000, 5000, 9);
    clock.advance(1e9);
    a.advance(clock.nowNs());
    while (a.hasInterrupt()) {
      a.acknowledgeInterrupt();
      w(EOI, 0);
    }
  } finally {
    log.restore();
  }
});
