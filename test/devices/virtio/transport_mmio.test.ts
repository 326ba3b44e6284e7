import assert from "node:assert/strict";
import { test } from "node:test";
import { setDeviceLogSink } from "../../../src/devices/guest_fault_log.js";
import { RngDevice } from "../../../src/devices/virtio/rng/device.js";
import { MmioReg, MmioTransport, VIRTIO_MMIO_MAGIC } from "../../../src/devices/virtio/transport_mmio.js";
import { GuestMemory } from "../../../src/memory/guest_memory.js";
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_RNG,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../../../src/devices/virtio/virtio_device.js";
import { MEM_SIZE, VirtioTestHelper } from "./virtio_test_helper.js";

setDeviceLogSink(() => {});

function rng(): VirtioTestHelper {
  return new VirtioTestHelper((memory) => new RngDevice(memory));
}

test("virtio-mmio identifies itself as a version 2 device with its id (virtio_mmio_probe)", () => {
  const h = rng();
  assert.equal(h.reg(MmioReg.MagicValue), VIRTIO_MMIO_MAGIC);
  assert.equal(h.reg(MmioReg.Version), 2);
  assert.equal(h.reg(MmioReg.DeviceId), VIRTIO_ID_RNG);
  const f = h.deviceFeatures();
  assert.ok((f & VIRTIO_F_VERSION_1) !== 0n);
  assert.ok((f & VIRTIO_RING_F_INDIRECT_DESC) !== 0n);
  assert.ok((f & VIRTIO_RING_F_EVENT_IDX) !== 0n);
  h.setReg(MmioReg.QueueSel, 0);
  assert.equal(h.reg(MmioReg.QueueNumMax), 256);
  h.setReg(MmioReg.QueueSel, 1);
  assert.equal(h.reg(MmioReg.QueueNumMax), 0, "a queue that does not exist has QueueNumMax 0");
});

test("virtio-mmio refuses FEATURES_OK without VIRTIO_F_VERSION_1", () => {
  const h = rng();
  assert.throws(() => h.init({ accept: (f) => f & ~VIRTIO_F_VERSION_1 }), /refused FEATURES_OK/);
  assert.equal(h.status() & STATUS_FEATURES_OK, 0);
});

test("virtio-mmio refuses FEATURES_OK for features it did not offer", () => {
  const h = rng();
  assert.throws(() => h.init({ accept: (f) => f | (1n << 50n) }), /refused FEATURES_OK/);
});

test("virtio-mmio ignores DriverFeatures written before DRIVER or after FEATURES_OK", () => {
  const h = rng();
  h.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE);
  h.setReg(MmioReg.DriverFeaturesSel, 1);
  h.setReg(MmioReg.DriverFeatures, 1);
  assert.equal(h.transport.acceptedFeatures, 0n);
  h.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  h.setReg(MmioReg.DriverFeatures, 1);
  h.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  h.setReg(MmioReg.DriverFeaturesSel, 0);
  h.setReg(MmioReg.DriverFeatures, 0xffff);
  assert.equal(h.transport.acceptedFeatures, VIRTIO_F_VERSION_1);
});

test("virtio-mmio raises its level interrupt on used buffers until InterruptACK", () => {
  const h = rng();
  h.init();
  assert.equal(h.irq.high, false);
  h.queue(0).add([{ writable: 16 }]);
  assert.equal(h.irq.high, true);
  assert.equal(h.reg(MmioReg.InterruptStatus), 1);
  assert.equal(h.ackInterrupt(), 1);
  assert.equal(h.irq.high, false);
  assert.equal(h.reg(MmioReg.InterruptStatus), 0);
});

test("virtio-mmio status 0 resets queues, features and the interrupt", () => {
  const h = rng();
  h.init();
  h.queue(0).add([{ writable: 8 }]);
  assert.equal(h.irq.high, true);
  h.setReg(MmioReg.Status, 0);
  assert.equal(h.status(), 0);
  assert.equal(h.irq.high, false);
  assert.equal(h.transport.acceptedFeatures, 0n);
  h.setReg(MmioReg.QueueSel, 0);
  assert.equal(h.reg(MmioReg.QueueReady), 0);
  assert.equal(h.reg(MmioReg.QueueNumMax), 256);
  // And the device works again after a second initialisation.
  h.init();
  h.queue(0).add([{ writable: 8 }]);
  assert.deepEqual(
    h
      .queue(0)
      .takeUsed()
      .map((u) => u.len),
    [8],
  );
});

test("virtio-mmio reads back QueueReady 0 after the driver clears it (vm_del_vq)", () => {
  const h = rng();
  h.init();
  h.setReg(MmioReg.QueueSel, 0);
  assert.equal(h.reg(MmioReg.QueueReady), 1);
  h.setReg(MmioReg.QueueReady, 0);
  assert.equal(h.reg(MmioReg.QueueReady), 0);
});

test("virtio-mmio answers ~0 for shared memory regions it does not have", () => {
  const h = rng();
  h.setReg(MmioReg.ShmSel, 0);
  assert.equal(h.reg(MmioReg.ShmLenLow), 0xffffffff);
  assert.equal(h.reg(MmioReg.ShmLenHigh), 0xffffffff);
});

test("virtio-mmio ignores control registers accessed with the wrong width", () => {
  const h = rng();
  assert.equal(h.transport.read(MmioReg.MagicValue, 1), 0);
  h.transport.write(MmioReg.Status, 2, 1);
  assert.equal(h.status(), 0);
  assert.ok(h.transport.stats.guestErrors >= 2);
});

test("virtio-mmio ignores a notify before DRIVER_OK and queue changes while ready", () => {
  const h = rng();
  h.setReg(MmioReg.QueueNotify, 0);
  h.init();
  const q = h.queue(0);
  h.setReg(MmioReg.QueueSel, 0);
  h.setReg(MmioReg.QueueDescLow, 0xdead0000);
  q.add([{ writable: 4 }]);
  assert.equal(q.takeUsed().length, 1, "the queue kept its configured address");
});

test("virtio-mmio sets DEVICE_NEEDS_RESET for rings outside guest memory and raises a config interrupt", () => {
  const h = rng();
  h.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  h.setReg(MmioReg.DriverFeaturesSel, 1);
  h.setReg(MmioReg.DriverFeatures, 1);
  h.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  h.setReg(MmioReg.QueueSel, 0);
  h.setReg(MmioReg.QueueNum, 16);
  h.setReg(MmioReg.QueueDescLow, 0);
  h.setReg(MmioReg.QueueDescHigh, 0x10); // 64 GiB: outside the 4 MiB of guest memory
  h.setReg(MmioReg.QueueDriverLow, 0x1000);
  h.setReg(MmioReg.QueueDeviceLow, 0x2000);
  h.setReg(MmioReg.QueueReady, 1);
  h.setReg(MmioReg.Status, 0xf);
  assert.ok((h.status() & STATUS_DEVICE_NEEDS_RESET) !== 0);
  assert.equal(h.reg(MmioReg.InterruptStatus) & 2, 2);
  h.setReg(MmioReg.QueueNotify, 0); // ignored, no crash
});

test("virtio-mmio turns an exception of the device into DEVICE_NEEDS_RESET, never into a VMM crash", () => {
  const h = new VirtioTestHelper((memory) => {
    const dev = new RngDevice(memory);
    dev.queueNotify = () => {
      throw new Error("host backend exploded");
    };
    return dev;
  });
  h.init();
  h.queue(0).add([{ writable: 4 }]);
  assert.ok((h.status() & STATUS_DEVICE_NEEDS_RESET) !== 0);
});

test("virtio-mmio bumps ConfigGeneration and raises a config interrupt when the device changes its config", () => {
  const h = rng();
  h.init();
  const before = h.reg(MmioReg.ConfigGeneration);
  h.transport.configChanged();
  assert.equal(h.reg(MmioReg.ConfigGeneration), before + 1);
  assert.equal(h.ackInterrupt(), 2, "VIRTIO_MMIO_INT_CONFIG");
  assert.equal(h.irq.high, false);
});

test("virtio-mmio in edge mode pulses its line for every notification", () => {
  const levels: boolean[] = [];
  const memory = GuestMemory.shared([{ base: 0, size: MEM_SIZE }]);
  const h = new VirtioTestHelper((m) => new RngDevice(m), { memory });
  const edge = new MmioTransport(h.device, memory, { setLevel: (l) => levels.push(l) }, { irqMode: "edge" });
  edge.signalUsedBuffer();
  edge.signalUsedBuffer();
  assert.deepEqual(levels, [true, false, true, false]);
  assert.equal(edge.read(MmioReg.InterruptStatus, 4), 1);
  edge.write(MmioReg.InterruptAck, 4, 1);
  assert.deepEqual(levels, [true, false, true, false], "acknowledging does not touch an edge line");
});
