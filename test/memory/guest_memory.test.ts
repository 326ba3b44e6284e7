import assert from "node:assert/strict";
import { test } from "node:test";
import { GuestMemory, MemoryError } from "../../src/memory/guest_memory.js";

test("guest memory reads back little-endian values written across regions", () => {
  const mem = GuestMemory.shared([
    { base: 0, size: 0x10000 },
    { base: 0x1_0000_0000, size: 0x1000 },
  ]);
  mem.writeU32(0x100, 0xdeadbeef);
  assert.equal(mem.readU8(0x100), 0xef);
  assert.equal(mem.readU16(0x102), 0xdead);
  mem.writeU64(0x1_0000_0008, 0x1122334455667788n);
  assert.equal(mem.readU32(0x1_0000_000c), 0x11223344);
  assert.equal(mem.size, 0x11000);
});

test("guest memory refuses accesses that leave a region, however large the length", () => {
  const mem = GuestMemory.shared([{ base: 0, size: 0x1000 }]);
  assert.throws(() => mem.readU32(0xffe), MemoryError);
  assert.throws(() => mem.slice(0x800, 0xffffffff), /outside guest memory/);
  assert.throws(() => mem.write(0x2000, new Uint8Array(1)), MemoryError);
  assert.equal(mem.contains(0xfff, 1), true);
  assert.equal(mem.contains(0xfff, 2), false);
  assert.equal(mem.contains(-1, 1), false);
});

test("guest memory on a SharedArrayBuffer is visible from a worker thread", async () => {
  const { Worker } = await import("node:worker_threads");
  const mem = GuestMemory.shared([{ base: 0, size: 0x1000 }]);
  const worker = new Worker(
    `const { workerData, parentPort } = require("node:worker_threads");
     const bytes = new Uint8Array(workerData.backing.buffer);
     bytes[0x10] = 0x5a;
     parentPort.postMessage("done");`,
    { eval: true, workerData: mem.descriptors[0] },
  );
  await new Promise((resolve) => worker.once("message", resolve));
  await worker.terminate();
  assert.equal(mem.readU8(0x10), 0x5a);
});
