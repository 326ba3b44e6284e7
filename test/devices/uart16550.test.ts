import assert from "node:assert/strict";
import { test } from "node:test";
import { Uart16550 } from "../../src/devices/uart16550.js";
import { hammer, RecordingIrq } from "./helpers.js";

const RBR = 0;
const THR = 0;
const IER = 1;
const IIR = 2;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

function uart() {
  const irq = new RecordingIrq();
  const out: number[] = [];
  const u = new Uart16550(irq, (b) => {
    if (typeof b === "number") out.push(b);
    else out.push(...b);
  });
  return { u, irq, out };
}

test("uart16550 transmits THR writes to the output at once with THRE and TEMT set", () => {
  const { u, out } = uart();
  for (const c of "hi\n") u.write(THR, 1, c.charCodeAt(0));
  assert.equal(String.fromCharCode(...out), "hi\n");
  assert.equal(u.read(LSR, 1) & 0x60, 0x60);
});

test("uart16550 passes Linux's autoconfig: IER bits 7:4 stay zero, loopback MSR 0x90, IIR FIFO bits 11", () => {
  const { u } = uart();
  u.write(IER, 1, 0);
  assert.equal(u.read(IER, 1) & 0x0f, 0);
  u.write(IER, 1, 0xff);
  assert.equal(u.read(IER, 1), 0x0f);
  u.write(IER, 1, 0);
  u.write(MCR, 1, 0x10 | 0x0a); // LOOP | RTS | OUT2
  assert.equal(u.read(MSR, 1) & 0xf0, 0x90);
  u.write(MCR, 1, 0);
  u.write(LCR, 1, 0xbf);
  u.write(FCR, 1, 0); // "EFR" write lands on FCR on a 16550A
  u.write(LCR, 1, 0);
  u.write(FCR, 1, 0x01);
  assert.equal(u.read(IIR, 1) >> 6, 3);
  // TI16750 test: 64-byte FIFO bit must not show in IIR bit 5.
  u.write(FCR, 1, 0x21);
  assert.equal(u.read(IIR, 1) >> 5, 6);
  // The FIFO is 16 bytes deep (size_fifo: 256 bytes looped back, count what arrives).
  u.write(FCR, 1, 0x07);
  u.write(MCR, 1, 0x10);
  for (let i = 0; i < 256; i++) u.write(THR, 1, i);
  let count = 0;
  while (u.read(LSR, 1) & 1 && count < 256) {
    assert.equal(u.read(RBR, 1), count);
    count++;
  }
  assert.equal(count, 16);
});

test("uart16550 raises THRE interrupt when IER.ETBEI is set", () => {
  const { u, irq } = uart();
  u.write(MCR, 1, 0x08); // OUT2: interrupts reach the bus
  assert.equal(irq.level, false);
  u.write(IER, 1, 0x02);
  assert.equal(irq.level, true);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x02);
  // Reading IIR acknowledged it.
  assert.equal(irq.level, false);
  assert.equal(u.read(IIR, 1) & 0x01, 0x01);
  // Writing THR re-raises it once the byte has left.
  u.write(THR, 1, 0x41);
  assert.equal(irq.level, true);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x02);
});

test("uart16550 passes the 8250 THRE re-assert test (no UART_BUG_THRE) and the TXEN test", () => {
  const { u } = uart();
  u.write(IER, 1, 0x02);
  const iir1 = u.read(IIR, 1);
  u.write(IER, 1, 0);
  u.write(IER, 1, 0x02);
  const iir = u.read(IIR, 1);
  u.write(IER, 1, 0);
  assert.equal(iir1 & 1, 0);
  assert.equal(iir & 1, 0);
  // TXEN test: IER = THRI, then LSR and IIR: IIR must show an interrupt.
  u.write(IER, 1, 0x02);
  const lsr = u.read(LSR, 1);
  const iir2 = u.read(IIR, 1);
  assert.ok(lsr & 0x40);
  assert.equal(iir2 & 1, 0);
});

test("uart16550 keeps its interrupt off the bus without MCR.OUT2 and in loopback", () => {
  const { u, irq } = uart();
  u.write(IER, 1, 0x02);
  assert.equal(irq.level, false);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x02); // pending inside the chip
  u.write(IER, 1, 0);
  u.write(MCR, 1, 0x18); // OUT2 | LOOP
  u.write(IER, 1, 0x02);
  assert.equal(irq.level, false);
  u.write(MCR, 1, 0x08);
  assert.equal(irq.level, true);
});

test("uart16550 delivers received bytes through RBR with DR and the RX data interrupt", () => {
  const { u, irq } = uart();
  u.write(MCR, 1, 0x08);
  u.write(FCR, 1, 0x81); // FIFOs on, trigger level 8
  u.write(IER, 1, 0x01);
  assert.equal(u.receive(new Uint8Array([0x61, 0x62])), 2);
  assert.equal(irq.level, true);
  assert.equal(u.read(IIR, 1), 0xc0 | 0x0c); // below the trigger level: character timeout
  assert.equal(u.read(LSR, 1) & 1, 1);
  assert.equal(u.read(RBR, 1), 0x61);
  assert.equal(u.read(RBR, 1), 0x62);
  assert.equal(u.read(LSR, 1) & 1, 0);
  assert.equal(irq.level, false);
  assert.equal(u.read(IIR, 1), 0xc1);
});

test("uart16550 reports RX data at the FIFO trigger level as IIR 0x04", () => {
  const { u } = uart();
  u.write(FCR, 1, 0x41); // trigger 4
  u.write(IER, 1, 0x01);
  u.receive([1, 2, 3, 4]);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x04);
});

test("uart16550 FIFO overrun sets OE and raises a line status interrupt that outranks RX data", () => {
  const { u, irq } = uart();
  u.write(MCR, 1, 0x08);
  u.write(FCR, 1, 0x01);
  u.write(IER, 1, 0x05);
  assert.equal(u.rxSpace(), 16);
  const bytes = new Uint8Array(20).map((_, i) => i);
  assert.equal(u.receive(bytes), 16);
  assert.equal(u.rxSpace(), 0);
  assert.equal(u.stats.overruns, 4);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x06);
  const lsr = u.read(LSR, 1);
  assert.equal(lsr & 0x03, 0x03); // DR | OE
  assert.equal(u.read(LSR, 1) & 0x02, 0); // OE cleared by the read
  assert.equal(u.read(IIR, 1) & 0x0f, 0x04); // RX data remains (16 >= trigger 1)
  assert.equal(irq.level, true);
  for (let i = 0; i < 16; i++) assert.equal(u.read(RBR, 1), i); // the FIFO kept the first 16
});

test("uart16550 without FIFOs holds one byte and overwrites it on overrun", () => {
  const { u } = uart();
  assert.equal(u.rxSpace(), 1);
  assert.equal(u.receive([1, 2]), 1);
  assert.equal(u.read(LSR, 1) & 0x03, 0x03);
  assert.equal(u.read(RBR, 1), 2);
});

test("uart16550 FCR clears the RX FIFO and disabling FIFOs resets them", () => {
  const { u } = uart();
  u.write(FCR, 1, 0x01);
  u.receive([1, 2, 3]);
  u.write(FCR, 1, 0x03);
  assert.equal(u.read(LSR, 1) & 1, 0);
  u.receive([4]);
  u.write(FCR, 1, 0x00);
  assert.equal(u.read(LSR, 1) & 1, 0);
  assert.equal(u.read(IIR, 1), 0x01); // no FIFO bits
});

test("uart16550 divisor latch is reached through LCR.DLAB and hides RBR/IER", () => {
  const { u, out } = uart();
  u.write(IER, 1, 0x05);
  u.write(LCR, 1, 0x83);
  u.write(0, 1, 0x01);
  u.write(1, 1, 0x00);
  assert.equal(u.read(0, 1), 0x01);
  assert.equal(u.read(1, 1), 0x00);
  assert.equal(out.length, 0); // DLL write did not transmit
  assert.equal(u.baud(), 115200);
  u.write(LCR, 1, 0x03);
  assert.equal(u.read(IER, 1), 0x05);
  assert.equal(u.read(LCR, 1), 0x03);
});

test("uart16550 loopback sends THR to its own receiver and maps MCR to MSR with deltas", () => {
  const { u, out } = uart();
  u.read(MSR, 1);
  u.write(MCR, 1, 0x10);
  u.write(THR, 1, 0x5a);
  assert.equal(out.length, 0);
  assert.equal(u.read(RBR, 1), 0x5a);
  u.read(MSR, 1); // clear the deltas of entering loopback
  u.write(MCR, 1, 0x10 | 0x01 | 0x04); // DTR, OUT1
  const msr = u.read(MSR, 1);
  assert.equal(msr & 0xf0, 0x20 | 0x40); // DSR, RI
  assert.equal(msr & 0x02, 0x02); // DDSR
  assert.equal(u.read(MSR, 1) & 0x0f, 0); // deltas cleared by the read
  u.write(MCR, 1, 0x10); // RI falls: trailing edge
  assert.equal(u.read(MSR, 1) & 0x04, 0x04);
  assert.equal(u.receive([1]), 0); // receiver disconnected from the line
});

test("uart16550 modem status interrupt has the lowest priority", () => {
  const { u } = uart();
  u.write(MCR, 1, 0x10); // loopback changes MSR inputs: deltas
  u.write(IER, 1, 0x08 | 0x02);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x02); // THRE first (and acknowledged)
  assert.equal(u.read(IIR, 1) & 0x0f, 0x00); // then modem status
  u.read(MSR, 1);
  assert.equal(u.read(IIR, 1) & 0x0f, 0x01);
});

test("uart16550 scratch register holds a byte and the console sees CTS, DSR, DCD", () => {
  const { u } = uart();
  u.write(SCR, 1, 0xa5);
  assert.equal(u.read(SCR, 1), 0xa5);
  assert.equal(u.read(MSR, 1) & 0xf0, 0xb0);
});

test("uart16550 calls onRxDrained when the guest empties the FIFO", () => {
  const { u } = uart();
  let drained = 0;
  u.onRxDrained = () => drained++;
  u.write(FCR, 1, 0x01);
  u.receive([1, 2]);
  u.read(RBR, 1);
  assert.equal(drained, 0);
  u.read(RBR, 1);
  assert.equal(drained, 1);
});

test("uart16550 answers 16- and 32-bit accesses as byte accesses at consecutive ports", () => {
  const { u } = uart();
  u.write(SCR, 1, 0x12);
  assert.equal(u.read(6, 2) >>> 8, 0x12);
  assert.equal(u.read(7, 4), 0xffffff12); // bytes past the 8-port range read 0xff
  u.write(3, 2, 0x0003); // LCR = 3, MCR = 0
  assert.equal(u.read(LCR, 1), 3);
});

test("uart16550 survives garbage written to every register", () => {
  const { u, out } = uart();
  hammer(u, 8);
  u.receive(new Uint8Array(100));
  assert.ok(out.length >= 0);
  assert.ok(u.rxSpace() >= 0 && u.rxSpace() <= 16);
});
