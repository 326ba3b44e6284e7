import assert from "node:assert/strict";
import { test } from "node:test";
import { PortBus } from "../../src/bus/port_bus.js";
import { I8042 } from "../../src/devices/i8042.js";
import { captureDeviceLog, hammer, RecordingIrq } from "./helpers.js";

function controller() {
  const kbd = new RecordingIrq();
  const aux = new RecordingIrq();
  let resets = 0;
  const a20: boolean[] = [];
  const c = new I8042(
    kbd,
    aux,
    () => resets++,
    (on) => a20.push(on),
  );
  const bus = new PortBus();
  c.attach(bus);
  /** i8042_command: write the command, the parameter bytes, read the answers. */
  const command = (cmd: number, params: number[] = [], answers = 0): number[] => {
    assert.equal(bus.read(0x64, 1) & 0x02, 0, "IBF clear");
    bus.write(0x64, 1, cmd);
    for (const p of params) bus.write(0x60, 1, p);
    const out: number[] = [];
    for (let i = 0; i < answers; i++) {
      assert.equal(bus.read(0x64, 1) & 0x01, 1, `OBF for answer ${i} of ${cmd.toString(16)}`);
      out.push(bus.read(0x60, 1));
    }
    return out;
  };
  return { c, bus, kbd, aux, command, resets: () => resets, a20 };
}

test("i8042 registers data at 0x60 and status/command at 0x64, leaving 0x61 free", () => {
  const { bus } = controller();
  assert.equal(bus.read(0x61, 1), 0xff);
  bus.read(0x61, 1);
  assert.equal(bus.unclaimedReads, 2);
});

test("i8042 passes Linux's probe: flush, self-test 0x55, stable CTR read, CTR write", () => {
  const { bus, command } = controller();
  assert.equal(bus.read(0x64, 1) & 0x01, 0); // i8042_controller_check: nothing to flush
  assert.deepEqual(command(0xaa, [], 1), [0x55]);
  const [ctr1] = command(0x20, [], 1);
  const [ctr2] = command(0x20, [], 1);
  assert.equal(ctr1, ctr2);
  assert.ok(bus.read(0x64, 1) & 0x10, "keylock bit says not inhibited");
  command(0x60, [0x30]);
  assert.deepEqual(command(0x20, [], 1), [0x30]);
});

test("i8042 AUX loopback returns the byte as AUX data with IRQ12 when CTR.AUXINT is set", () => {
  const { bus, command, aux, kbd } = controller();
  assert.deepEqual(command(0xd3, [0x5a], 1), [0x5a]);
  command(0xa7);
  assert.ok(command(0x20, [], 1)[0]! & 0x20);
  command(0xa8);
  assert.equal(command(0x20, [], 1)[0]! & 0x20, 0);
  command(0x60, [0x02]); // AUXINT only
  bus.write(0x64, 1, 0xd3);
  bus.write(0x60, 1, 0xa5);
  assert.equal(aux.level, true);
  assert.equal(kbd.level, false);
  assert.equal(bus.read(0x64, 1) & 0x21, 0x21);
  assert.equal(bus.read(0x60, 1), 0xa5);
  assert.equal(aux.level, false);
});

test("i8042 is not mistaken for an active multiplexing controller", () => {
  const { command } = controller();
  assert.deepEqual(command(0xd3, [0xf0], 1), [0xf0]);
  assert.deepEqual(command(0xd3, [0x56], 1), [0x56]);
  // A MUX controller answers the third loop byte with its version; we echo it, so no MUX.
  assert.deepEqual(command(0xd3, [0xa4], 1), [0xa4]);
});

test("i8042 answers AUX and keyboard interface tests with no error", () => {
  const { command } = controller();
  assert.deepEqual(command(0xa9, [], 1), [0x00]);
  assert.deepEqual(command(0xab, [], 1), [0x00]);
});

test("i8042 raises IRQ1 for keyboard-port data when CTR.KBDINT is set, with a new edge per byte", () => {
  const { bus, command, kbd } = controller();
  command(0x60, [0x01]);
  bus.write(0x64, 1, 0xd2);
  bus.write(0x60, 1, 0x11);
  bus.write(0x64, 1, 0xd2);
  bus.write(0x60, 1, 0x22);
  assert.equal(kbd.level, true);
  assert.equal(bus.read(0x60, 1), 0x11);
  assert.equal(kbd.level, true);
  assert.equal(kbd.rises, 2);
  assert.equal(bus.read(0x60, 1), 0x22);
  assert.equal(kbd.level, false);
});

test("i8042 answers bytes for the absent keyboard and mouse with 0xFE and the timeout bit", () => {
  const { bus } = controller();
  bus.write(0x60, 1, 0xf2); // atkbd GETID
  assert.equal(bus.read(0x64, 1) & 0x61, 0x41);
  assert.equal(bus.read(0x60, 1), 0xfe);
  bus.write(0x64, 1, 0xd4);
  bus.write(0x60, 1, 0xf2); // psmouse GETID
  assert.equal(bus.read(0x64, 1) & 0x61, 0x61);
  assert.equal(bus.read(0x60, 1), 0xfe);
  assert.equal(bus.read(0x64, 1) & 0x41, 0);
});

test("i8042 command 0xFE on port 0x64 pulses the reset line", () => {
  const { bus, resets, c } = controller();
  bus.write(0x64, 1, 0xfe);
  assert.equal(resets(), 1);
  bus.write(0x64, 1, 0xff); // pulses nothing
  assert.equal(resets(), 1);
  assert.equal(c.stats.resets, 1);
});

test("i8042 output port write sets the A20 gate and bit 0 low resets", () => {
  const { command, resets, a20, c } = controller();
  assert.equal(c.a20, true);
  assert.equal(command(0xd0, [], 1)[0]! & 0x03, 0x03);
  command(0xd1, [0x01]);
  assert.equal(c.a20, false);
  assert.deepEqual(a20, [false]);
  command(0xd1, [0x03]);
  assert.deepEqual(a20, [false, true]);
  assert.equal(resets(), 0);
  command(0xd1, [0x02]);
  assert.equal(resets(), 1);
});

test("i8042 counts unknown commands without throwing and keeps answering", () => {
  const log = captureDeviceLog();
  try {
    const { c, command } = controller();
    command(0x12);
    assert.equal(c.faults.count, 1);
    assert.equal(log.lines.length, 1);
    assert.deepEqual(command(0xaa, [], 1), [0x55]);
  } finally {
    log.restore();
  }
});

test("i8042 survives garbage written to both ports", () => {
  const log = captureDeviceLog();
  try {
    const { c } = controller();
    hammer(c.dataPort, 1, 5000, 1);
    hammer(c.commandPort, 1, 5000, 2);
    assert.ok(log.lines.length <= 20, "log is rate-limited");
  } finally {
    log.restore();
  }
});
