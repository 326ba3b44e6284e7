import assert from "node:assert/strict";
import { test } from "node:test";
import type { AccessSize, Device } from "../../src/bus/device.js";
import { MmioBus } from "../../src/bus/mmio_bus.js";
import { PortBus } from "../../src/bus/port_bus.js";

/** A device that records accesses and answers reads with offset + size. */
function recorder(name: string) {
  const writes: [number, number, number][] = [];
  const device: Device = {
    name,
    read: (offset: number, size: AccessSize) => offset * 16 + size,
    write: (offset: number, size: AccessSize, value: number) => void writes.push([offset, size, value]),
  };
  return { device, writes };
}

test("port bus routes by range and passes offsets into the device's own range", () => {
  const bus = new PortBus();
  const a = recorder("a");
  bus.register(0x3f8, 8, a.device);
  assert.equal(bus.read(0x3fd, 1), 5 * 16 + 1);
  bus.write(0x3f9, 1, 0x42);
  assert.deepEqual(a.writes, [[1, 1, 0x42]]);
});

test("port bus answers unclaimed reads with all ones and counts them", () => {
  const bus = new PortBus();
  assert.equal(bus.read(0x1234, 1), 0xff);
  assert.equal(bus.read(0x1234, 2), 0xffff);
  assert.equal(bus.read(0x1234, 4), 0xffffffff);
  bus.write(0x80, 1, 0);
  assert.equal(bus.unclaimedReads, 3);
  assert.equal(bus.unclaimedWrites, 1);
});

test("port bus refuses overlapping and out-of-range registrations", () => {
  const bus = new PortBus();
  bus.register(0x60, 1, recorder("kbd").device);
  assert.throws(() => bus.register(0x5f, 2, recorder("x").device), /overlaps kbd/);
  assert.throws(() => bus.register(0xfffe, 4, recorder("y").device), /outside/);
});

test("mmio bus finds devices among many ranges and counts unclaimed accesses", () => {
  const bus = new MmioBus();
  const devs = [0xd0002000, 0xd0000000, 0xfee00000, 0xd0001000].map((base) => {
    const r = recorder(`d${base.toString(16)}`);
    bus.register(base, 0x1000, r.device);
    return { base, ...r };
  });
  for (const d of devs) {
    assert.equal(bus.read(d.base + 0x70, 4), 0x70 * 16 + 4);
    bus.write(d.base + 0xffc, 4, 7);
    assert.deepEqual(d.writes, [[0xffc, 4, 7]]);
  }
  assert.equal(bus.read(0xd0003000, 4), 0xffffffff);
  assert.equal(bus.unclaimedReads, 1);
  assert.throws(() => bus.register(0xd0000800, 0x1000, recorder("z").device), /overlaps/);
});
