/**
 * virtio-blk with its I/O thread: the notify only rings a doorbell, the worker serves the queue in
 * guest memory shared with it, and completions reach the interrupt line through poll().
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { setDeviceLogSink } from "../../../src/devices/guest_fault_log.js";
import {
  BlkDevice,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
} from "../../../src/devices/virtio/blk/device.js";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../../src/devices/virtio/queue.js";
import { STATUS_DEVICE_NEEDS_RESET } from "../../../src/devices/virtio/virtio_device.js";
import { diskImages, header } from "./blk_fixture.js";
import { VirtioTestHelper, waitFor } from "./virtio_test_helper.js";

setDeviceLogSink(() => {});
const { image } = diskImages("vessel-blk-thread-", 64);

function threaded(path: string, readOnly = false) {
  const h = new VirtioTestHelper((m) => new BlkDevice(m, { path, readOnly, ioThread: true }));
  h.init();
  return { h, dev: h.device as BlkDevice };
}

/** Sends a request and waits for it the way a guest would: for the interrupt, then the used ring. */
async function request(h: VirtioTestHelper, hdr: Uint8Array, out?: Uint8Array, inLen = 0) {
  const bufs = [
    { data: hdr },
    ...(out ? [{ data: out }] : []),
    ...(inLen > 0 ? [{ writable: inLen }] : []),
    { writable: 1 },
  ];
  const { addrs } = h.queue(0).add(bufs);
  await waitFor(() => {
    h.transport.poll(true);
    return h.irq.high;
  });
  h.ackInterrupt();
  const used = h.queue(0).takeUsed();
  assert.equal(used.length, 1);
  return {
    status: h.memory.readU8(addrs[addrs.length - 1]!),
    data: inLen > 0 ? h.memory.read(addrs[addrs.length - 2]!, inLen) : new Uint8Array(),
  };
}

test("virtio-blk I/O thread serves reads, writes and flushes off the notifying thread", async () => {
  const path = image();
  const { h, dev } = threaded(path);
  try {
    assert.ok(dev.threaded);
    const r = await request(h, header(VIRTIO_BLK_T_IN, 5), undefined, 512);
    assert.equal(r.status, VIRTIO_BLK_S_OK);
    assert.ok(r.data.every((b) => b === 5));
    assert.equal(
      (await request(h, header(VIRTIO_BLK_T_OUT, 7), new Uint8Array(512).fill(0xee))).status,
      VIRTIO_BLK_S_OK,
    );
    assert.equal((await request(h, header(VIRTIO_BLK_T_FLUSH, 0))).status, VIRTIO_BLK_S_OK);
    assert.ok(
      readFileSync(path)
        .subarray(7 * 512, 8 * 512)
        .every((b) => b === 0xee),
    );
    assert.equal(dev.metrics.reads, 1);
    assert.equal(dev.metrics.flushes, 1);
    assert.equal(dev.waitFds().length, 1, "the eventfd a waiter thread watches");
  } finally {
    h.transport.close();
  }
});

test("virtio-blk I/O thread: read-only, and a reset then a second initialisation", async () => {
  const { h } = threaded(image(), true);
  try {
    assert.equal(
      (await request(h, header(VIRTIO_BLK_T_OUT, 0), new Uint8Array(512))).status,
      VIRTIO_BLK_S_IOERR,
    );
    h.init(); // status 0 stops the thread's queue (reset handshake), then a new one starts
    const r = await request(h, header(VIRTIO_BLK_T_IN, 63), undefined, 512);
    assert.equal(r.status, VIRTIO_BLK_S_OK);
    assert.ok(r.data.every((b) => b === 63));
  } finally {
    h.transport.close();
  }
});

test("virtio-blk I/O thread: a hostile chain marks the device DEVICE_NEEDS_RESET", async () => {
  const { h } = threaded(image());
  try {
    const q = h.queue(0);
    q.writeDesc(0, 0x100000, 16, VIRTQ_DESC_F_NEXT, 1);
    q.writeDesc(1, 0x100100, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
    q.publish(0);
    q.kick();
    await waitFor(() => {
      h.transport.poll(true);
      return (h.status() & STATUS_DEVICE_NEEDS_RESET) !== 0;
    });
  } finally {
    h.transport.close();
  }
});
