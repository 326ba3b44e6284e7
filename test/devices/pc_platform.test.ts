import assert from "node:assert/strict";
import { test } from "node:test";
import { MmioBus } from "../../src/bus/mmio_bus.js";
import { PortBus } from "../../src/bus/port_bus.js";
import { ManualClock } from "../../src/devices/clock.js";
import {
  MSR_IA32_APIC_BASE,
  MSR_IA32_TSC,
  MSR_IA32_TSC_DEADLINE,
  PcPlatform,
} from "../../src/devices/pc_platform.js";
import { PIT_HZ } from "../../src/devices/pit8254.js";
import { APIC_START, IOAPIC_START } from "../../src/memory/layout.js";
import { captureDeviceLog, prng } from "./helpers.js";

function machine(apic = true) {
  const clock = new ManualClock();
  const p = new PcPlatform({ clock, apic, tscHz: 2e9, tscDeadline: true, epochMs: Date.UTC(2026, 0, 1) });
  const ports = new PortBus();
  const mmio = new MmioBus();
  p.attach(ports, mmio);
  const out = (port: number, v: number) => ports.write(port, 1, v);
  /** init_8259A: vectors 0x30/0x38, all masked but the ones given. */
  const initPic = (unmasked = 0) => {
    out(0x20, 0x11);
    out(0x21, 0x30);
    out(0x21, 0x04);
    out(0x21, 0x01);
    out(0xa0, 0x11);
    out(0xa1, 0x38);
    out(0xa1, 0x02);
    out(0xa1, 0x01);
    out(0x21, ~unmasked & 0xff);
    out(0xa1, (~unmasked >> 8) & 0xff);
  };
  const ioapicRoute = (pin: number, low: number, dest = 0) => {
    mmio.write(IOAPIC_START, 4, 0x10 + 2 * pin);
    mmio.write(IOAPIC_START + 0x10, 4, low);
    mmio.write(IOAPIC_START, 4, 0x11 + 2 * pin);
    mmio.write(IOAPIC_START + 0x10, 4, dest << 24);
  };
  const apicWrite = (reg: number, v: number) => mmio.write(APIC_START + reg, 4, v);
  /** The PIT's periodic tick at `hz` (Linux: 0x34 then LSB, MSB on port 0x40). */
  const pitPeriodic = (hz: number) => {
    const latch = Math.round(PIT_HZ / hz);
    out(0x43, 0x34);
    out(0x40, latch & 0xff);
    out(0x40, latch >> 8);
  };
  /** One step of the CPU loop between slices. */
  const runTimers = () => {
    if (clock.nowNs() >= p.nextDeadlineNs()) p.advance(clock.nowNs());
  };
  return { clock, p, ports, mmio, out, initPic, ioapicRoute, apicWrite, pitPeriodic, runTimers };
}

test("pc platform, PIC only: the PIT tick reaches the CPU as vector 0x30 through the 8259", () => {
  const m = machine(false);
  m.initPic(0x0001);
  m.pitPeriodic(100);
  assert.equal(m.p.hasInterrupt(), false);
  m.clock.set(m.p.nextDeadlineNs());
  m.runTimers();
  assert.equal(m.p.hasInterrupt(), true);
  assert.equal(m.p.acknowledgeInterrupt(), 0x30);
  m.out(0x20, 0x60);
  assert.equal(m.p.hasInterrupt(), false);
  assert.equal(m.p.readMsr(MSR_IA32_APIC_BASE), undefined); // no APIC in this machine
  assert.equal(m.mmio.read(APIC_START + 0x30, 4), 0xffffffff);
});

test("pc platform: at reset the 8259 reaches the CPU through LINT0 (virtual wire)", () => {
  const m = machine();
  m.initPic(0x0001);
  m.pitPeriodic(100);
  m.clock.set(m.p.nextDeadlineNs());
  m.runTimers();
  assert.equal(m.p.acknowledgeInterrupt(), 0x30);
});

test("pc platform, IOAPIC mode: the PIT arrives on IOAPIC pin 2 and the LAPIC delivers it", () => {
  const m = machine();
  m.initPic(0); // all 8259 inputs masked, as Linux leaves them in IOAPIC mode
  m.apicWrite(0xf0, 0x1ff);
  m.apicWrite(0x350, 0x10700); // LINT0 masked ExtINT
  m.ioapicRoute(2, 0x30); // IRQ0 -> GSI2 (MADT override), vector 0x30, edge
  m.pitPeriodic(250);
  for (let tick = 1; tick <= 3; tick++) {
    m.clock.set(m.p.nextDeadlineNs());
    m.runTimers();
    assert.equal(m.p.hasInterrupt(), true, `tick ${tick}`);
    assert.equal(m.p.acknowledgeInterrupt(), 0x30);
    m.apicWrite(0xb0, 0);
  }
});

test("pc platform: a level-triggered line is redelivered after EOI while the device holds it", () => {
  const m = machine();
  m.initPic(0);
  m.apicWrite(0xf0, 0x1ff);
  m.ioapicRoute(5, 0x8000 | 0x45);
  const line = m.p.irqLine(5);
  line.setLevel(true);
  assert.equal(m.p.acknowledgeInterrupt(), 0x45);
  m.apicWrite(0xb0, 0); // EOI broadcast with the line still held
  assert.equal(m.p.acknowledgeInterrupt(), 0x45);
  line.setLevel(false);
  m.apicWrite(0xb0, 0);
  assert.equal(m.p.hasInterrupt(), false);
});

test("pc platform: devices sharing a line assert it as a wired-OR", () => {
  const m = machine(false);
  m.initPic(0x0020);
  m.out(0x4d0, 0x20); // IRQ5 level-triggered
  const a = m.p.irqLine(5);
  const b = m.p.irqLine(5);
  a.setLevel(true);
  b.setLevel(true);
  a.setLevel(false);
  assert.equal(m.p.acknowledgeInterrupt(), 0x35);
  m.out(0x20, 0x65);
  assert.equal(m.p.hasInterrupt(), true); // b still holds it
  b.setLevel(false);
  assert.equal(m.p.hasInterrupt(), false);
});

test("pc platform: IRQ 2, numbers past 23 and a 32nd source on one line are wiring errors", () => {
  const m = machine();
  assert.throws(() => m.p.irqLine(2), /cascade/);
  assert.throws(() => m.p.irqLine(24), RangeError);
  for (let i = 0; i < 31; i++) m.p.irqLine(7); // one bit each in the line's 31-bit wired-OR
  assert.throws(() => m.p.irqLine(7), /too many devices share IRQ 7/);
});

test("pc platform: the APIC timer, the PIT and the RTC share one deadline and one clock", () => {
  const m = machine();
  m.apicWrite(0xf0, 0x1ff);
  m.apicWrite(0x3e0, 0xb); // divide by 1
  m.apicWrite(0x320, 0xef); // one-shot
  m.apicWrite(0x380, 500_000); // 0.5 ms at 1 GHz
  m.pitPeriodic(100); // 10 ms
  assert.equal(m.p.nextDeadlineNs(), 500_000);
  m.clock.set(500_000);
  m.runTimers();
  assert.equal(m.p.acknowledgeInterrupt(), 0xef);
  assert.ok(Math.abs(m.p.nextDeadlineNs() - 10e6) < 1e4);
});

test("pc platform: TSC at the declared frequency, WRMSR IA32_TSC, and the TSC-deadline timer", () => {
  const m = machine();
  m.clock.set(1e9);
  assert.equal(m.p.tsc(m.clock.nowNs()), 2_000_000_000n);
  m.p.writeMsr(MSR_IA32_TSC, 0n);
  assert.equal(m.p.readMsr(MSR_IA32_TSC), 0n);
  m.clock.advance(1000);
  assert.equal(m.p.readMsr(MSR_IA32_TSC), 2000n);
  m.apicWrite(0xf0, 0x1ff);
  m.apicWrite(0x320, 0x40000 | 0xec);
  assert.equal(m.p.writeMsr(MSR_IA32_TSC_DEADLINE, 4000n), true);
  assert.equal(m.p.nextDeadlineNs(), 1e9 + 2000);
  m.clock.set(1e9 + 2000);
  m.runTimers();
  assert.equal(m.p.acknowledgeInterrupt(), 0xec);
  assert.equal(m.p.readMsr(MSR_IA32_APIC_BASE), 0xfee00900n);
  assert.equal(m.p.writeMsr(0x1234, 0n), false);
});

test("pc platform: the RTC interrupt arrives on IRQ8 through the slave 8259", () => {
  const m = machine(false);
  m.initPic(0x0104); // IRQ2 (cascade) and IRQ8
  m.out(0x70, 0x0b);
  m.out(0x71, 0x12); // UIE
  m.clock.set(m.p.nextDeadlineNs());
  m.runTimers();
  assert.equal(m.p.acknowledgeInterrupt(), 0x38);
});

test("pc platform survives garbage on every chipset port and MMIO register", () => {
  const log = captureDeviceLog();
  try {
    const m = machine();
    const rnd = prng(99);
    const ports = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71];
    for (let i = 0; i < 30000; i++) {
      const r = rnd();
      const size = ([1, 2, 4] as const)[r % 3]!;
      if (r & 0x100) {
        const port = ports[(r >>> 9) % ports.length]!;
        if (r & 0x200000) m.ports.read(port, size);
        else m.ports.write(port, size, rnd());
      } else {
        const base = r & 0x200 ? APIC_START : IOAPIC_START;
        const offset = (rnd() & 0xffc) >>> 0;
        if (r & 0x400) m.mmio.read(base + offset, size);
        else m.mmio.write(base + offset, size, rnd());
      }
      if ((i & 255) === 0) {
        m.clock.advance(1e5);
        m.runTimers();
        for (let n = 0; n < 8 && m.p.hasInterrupt(); n++) m.p.acknowledgeInterrupt();
      }
    }
    assert.ok(!Number.isNaN(m.p.nextDeadlineNs()));
  } finally {
    log.restore();
  }
});

test("pc platform: IOAPIC pin 0 in ExtINT mode carries the 8259's vector (Linux's check_timer fallback)", () => {
  const m = machine();
  m.initPic(0x0002);
  m.apicWrite(0xf0, 0x1ff);
  m.apicWrite(0x350, 0x10700); // LINT0 masked
  m.ioapicRoute(0, 0x700); // pin 0: ExtINT
  const kbd = m.p.irqLine(1);
  kbd.setLevel(true);
  assert.equal(m.p.hasInterrupt(), true);
  assert.equal(m.p.acknowledgeInterrupt(), 0x31);
  kbd.setLevel(false);
  m.out(0x20, 0x20);
  assert.equal(m.p.hasInterrupt(), false);
});
