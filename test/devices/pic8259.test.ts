import assert from "node:assert/strict";
import { test } from "node:test";
import { PortBus } from "../../src/bus/port_bus.js";
import { Pic8259Pair } from "../../src/devices/pic8259.js";
import { ELCR_PORT, PIC_MASTER_PORT, PIC_SLAVE_PORT } from "../../src/memory/layout.js";
import { captureDeviceLog, hammer } from "./helpers.js";

/** The pair as Linux's init_8259A leaves it: vectors 0x30/0x38, cascade on IRQ2, all unmasked. */
function linuxPic(autoEoi = false) {
  const pic = new Pic8259Pair();
  const bus = new PortBus();
  bus.register(PIC_MASTER_PORT, 2, pic.master);
  bus.register(PIC_SLAVE_PORT, 2, pic.slave);
  bus.register(ELCR_PORT, 2, pic.elcr);
  bus.write(0x21, 1, 0xff);
  bus.write(0xa1, 1, 0xff);
  bus.write(0x20, 1, 0x11); // ICW1: edge, cascade, ICW4
  bus.write(0x21, 1, 0x30); // ICW2: vector base
  bus.write(0x21, 1, 0x04); // ICW3: slave on IR2
  bus.write(0x21, 1, autoEoi ? 0x03 : 0x01); // ICW4: 8086 mode (auto-EOI)
  bus.write(0xa0, 1, 0x11);
  bus.write(0xa1, 1, 0x38);
  bus.write(0xa1, 1, 0x02);
  bus.write(0xa1, 1, 0x01);
  bus.write(0x21, 1, 0x00);
  bus.write(0xa1, 1, 0x00);
  return { pic, bus };
}

test("pic8259 passes Linux's probe: the master IMR reads back what was written", () => {
  const { bus } = linuxPic();
  bus.write(0xa1, 1, 0xff);
  bus.write(0x21, 1, 0xfb);
  assert.equal(bus.read(0x21, 1), 0xfb);
  assert.equal(bus.read(0xa1, 1), 0xff);
});

test("pic8259 delivers an edge on IRQ0 as vector base+0 and holds it in ISR until EOI", () => {
  const { pic, bus } = linuxPic();
  assert.equal(pic.hasInterrupt(), false);
  pic.setIrq(0, true);
  assert.equal(pic.hasInterrupt(), true);
  assert.equal(pic.acknowledgeInterrupt(), 0x30);
  assert.equal(pic.hasInterrupt(), false);
  bus.write(0x20, 1, 0x0b); // OCW3: read ISR
  assert.equal(bus.read(0x20, 1), 0x01);
  pic.setIrq(0, false);
  pic.setIrq(0, true); // second edge while in service: waits in IRR
  assert.equal(pic.hasInterrupt(), false);
  bus.write(0x20, 1, 0x60); // specific EOI, IRQ0 (what mask_and_ack_8259A writes)
  assert.equal(pic.hasInterrupt(), true);
  assert.equal(pic.acknowledgeInterrupt(), 0x30);
});

test("pic8259 ignores a held edge-triggered line until it falls and rises again", () => {
  const { pic, bus } = linuxPic();
  pic.setIrq(4, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x34);
  bus.write(0x20, 1, 0x20); // non-specific EOI
  pic.setIrq(4, true);
  assert.equal(pic.hasInterrupt(), false);
  pic.setIrq(4, false);
  pic.setIrq(4, true);
  assert.equal(pic.hasInterrupt(), true);
});

test("pic8259 cascades slave IRQs through master IRQ2 and needs EOI on both", () => {
  const { pic, bus } = linuxPic();
  pic.setIrq(8, true);
  assert.equal(pic.hasInterrupt(), true);
  assert.equal(pic.acknowledgeInterrupt(), 0x38);
  const s = pic.state();
  assert.equal(s.isr, (1 << 2) | (1 << 8));
  bus.write(0xa0, 1, 0x60); // specific EOI IRQ8 on the slave
  bus.write(0x20, 1, 0x62); // specific EOI IR2 on the master
  assert.equal(pic.state().isr, 0);
});

test("pic8259 honours priority: a higher-priority request preempts, a lower one waits", () => {
  const { pic, bus } = linuxPic();
  pic.setIrq(3, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x33);
  pic.setIrq(5, true);
  assert.equal(pic.hasInterrupt(), false); // lower than the in-service IRQ3
  pic.setIrq(1, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x31);
  bus.write(0x20, 1, 0x20); // non-specific EOI clears the highest in service: IRQ1
  assert.equal(pic.state().isr, 1 << 3);
  bus.write(0x20, 1, 0x20);
  assert.equal(pic.acknowledgeInterrupt(), 0x35);
});

test("pic8259 masks inputs with the IMR", () => {
  const { pic, bus } = linuxPic();
  bus.write(0x21, 1, 0x01);
  pic.setIrq(0, true);
  assert.equal(pic.hasInterrupt(), false);
  bus.write(0x20, 1, 0x0a); // read IRR
  assert.equal(bus.read(0x20, 1) & 1, 1);
  bus.write(0x21, 1, 0x00);
  assert.equal(pic.hasInterrupt(), true);
});

test("pic8259 level-triggered inputs (ELCR) stay requested while held and drop when released", () => {
  const { pic, bus } = linuxPic();
  bus.write(0x4d1, 1, 0xff); // slave: all allowed ones level
  assert.equal(bus.read(0x4d1, 1), 0xde); // IRQ8 and IRQ13 stay edge
  bus.write(0x4d0, 1, 0x20); // IRQ5 level
  pic.setIrq(5, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x35);
  bus.write(0x20, 1, 0x65);
  assert.equal(pic.hasInterrupt(), true); // still held: requested again
  pic.setIrq(5, false);
  assert.equal(pic.hasInterrupt(), false);
});

test("pic8259 auto-EOI mode leaves nothing in service", () => {
  const { pic } = linuxPic(true);
  pic.setIrq(1, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x31);
  assert.equal(pic.state().isr, 0);
});

test("pic8259 answers a spurious INTA with IRQ7's vector and puts nothing in service", () => {
  const { pic } = linuxPic();
  assert.equal(pic.acknowledgeInterrupt(), 0x37);
  assert.equal(pic.state().isr, 0);
  assert.equal(pic.stats.spurious, 1);
});

test("pic8259 poll mode answers 0x80 | level and acknowledges it", () => {
  const { pic, bus } = linuxPic();
  pic.setIrq(6, true);
  bus.write(0x20, 1, 0x0c); // OCW3 poll
  assert.equal(bus.read(0x20, 1), 0x86);
  assert.equal(pic.state().isr, 1 << 6);
});

test("pic8259 rotation: rotate on non-specific EOI makes the serviced level lowest", () => {
  const { pic, bus } = linuxPic();
  pic.setIrq(0, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x30);
  bus.write(0x20, 1, 0xa0); // rotate on non-specific EOI
  pic.setIrq(0, false);
  pic.setIrq(0, true);
  pic.setIrq(3, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x33); // IRQ0 is now lowest priority
});

test("pic8259 special mask mode lets lower levels through a masked in-service level", () => {
  const { pic, bus } = linuxPic();
  pic.setIrq(2 + 1, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x33);
  bus.write(0x21, 1, 0x08); // mask IRQ3 (in service)
  bus.write(0x20, 1, 0x68); // OCW3: set special mask
  pic.setIrq(5, true);
  assert.equal(pic.acknowledgeInterrupt(), 0x35);
});

test("pic8259 reports INTR output changes", () => {
  const { pic } = linuxPic();
  const seen: boolean[] = [];
  pic.onOutputChange = (h) => seen.push(h);
  pic.setIrq(0, true);
  pic.acknowledgeInterrupt();
  assert.deepEqual(seen, [true, false]);
});

test("pic8259 survives garbage written to every port", () => {
  const log = captureDeviceLog();
  try {
    const { pic } = linuxPic();
    hammer(pic.master, 2, 5000, 3);
    hammer(pic.slave, 2, 5000, 4);
    hammer(pic.elcr, 2, 2000, 5);
    for (let i = 0; i < 100; i++) {
      pic.setIrq(i % 17, (i & 1) === 0);
      if (pic.hasInterrupt()) pic.acknowledgeInterrupt();
    }
  } finally {
    log.restore();
  }
});
