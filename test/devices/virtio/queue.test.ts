/**
 * Split virtqueue tests, driven through virtio-rng (the simplest consumer of writable chains):
 * well-formed chains, notification suppression, and hostile chains that must leave the device
 * marked DEVICE_NEEDS_RESET without a hang, a crash or an access outside guest memory.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { setDeviceLogSink } from "../../../src/devices/guest_fault_log.js";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../../src/devices/virtio/queue.js";
import { RngDevice } from "../../../src/devices/virtio/rng/device.js";
import { MmioReg } from "../../../src/devices/virtio/transport_mmio.js";
import {
  STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../../src/devices/virtio/virtio_device.js";
import { GuestMemory } from "../../../src/memory/guest_memory.js";
import { MEM_SIZE, VirtioTestHelper } from "./virtio_test_helper.js";

setDeviceLogSink(() => {});

const W = VIRTQ_DESC_F_WRITE;
const N = VIRTQ_DESC_F_NEXT;

function rng(opts: { maxChainBytes?: number; memory?: GuestMemory } = {}): VirtioTestHelper {
  return new VirtioTestHelper((memory) => new RngDevice(memory), opts);
}

function broken(h: VirtioTestHelper): boolean {
  return (h.status() & STATUS_DEVICE_NEEDS_RESET) !== 0;
}

test("virtqueue serves a chain of several writable buffers and reports the bytes written", () => {
  const h = rng();
  h.init();
  const { head, addrs } = h.queue(0).add([{ writable: 10 }, { writable: 22 }]);
  assert.deepEqual(h.queue(0).takeUsed(), [{ id: head, len: 32 }]);
  const bytes = [...h.memory.read(addrs[0]!, 10), ...h.memory.read(addrs[1]!, 22)];
  assert.ok(
    bytes.some((b) => b !== 0),
    "random bytes arrived",
  );
});

test("virtqueue follows an indirect descriptor table", () => {
  const h = rng();
  h.init();
  const { head } = h.queue(0).add([{ writable: 7 }, { writable: 9 }], { indirect: true });
  assert.deepEqual(h.queue(0).takeUsed(), [{ id: head, len: 16 }]);
  assert.equal(broken(h), false);
});

test("virtqueue serves many requests, wrapping the rings past 16-bit index overflow", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  let total = 0;
  for (let i = 0; i < 70000; i++) {
    q.add([{ writable: 1 }]);
    total += q.takeUsed().length;
  }
  assert.equal(total, 70000);
  assert.equal(broken(h), false);
});

test("virtqueue without EVENT_IDX honours VRING_AVAIL_F_NO_INTERRUPT", () => {
  const h = rng();
  h.init({ accept: (f) => f & ~VIRTIO_RING_F_EVENT_IDX });
  const q = h.queue(0);
  q.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  q.add([{ writable: 4 }]);
  assert.equal(q.takeUsed().length, 1);
  assert.equal(h.irq.high, false);
  q.setAvailFlags(0);
  q.add([{ writable: 4 }]);
  assert.equal(h.irq.high, true);
});

test("virtqueue with EVENT_IDX interrupts only when used.idx passes used_event", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.setUsedEvent(2); // interrupt me when the used entry at index 2 is written
  q.add([{ writable: 4 }]); // used idx 0 -> 1
  q.add([{ writable: 4 }]); // 1 -> 2
  assert.equal(h.irq.high, false);
  q.add([{ writable: 4 }]); // 2 -> 3: passes used_event
  assert.equal(h.irq.high, true);
  assert.equal(q.takeUsed().length, 3);
});

test("virtqueue with EVENT_IDX publishes avail_event after draining the ring", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.add([{ writable: 4 }]);
  q.add([{ writable: 4 }]);
  assert.equal(q.availEvent(), 2, "the device asks for a kick when entry 2 is made available");
});

test("hostile: a descriptor loop marks the device broken instead of hanging", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.writeDesc(0, 0x100000, 8, W | N, 1);
  q.writeDesc(1, 0x100100, 8, W | N, 0);
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
  assert.equal(q.usedIdx(), 0);
  assert.equal(h.reg(MmioReg.InterruptStatus) & 2, 2, "config change notification for NEEDS_RESET");
});

test("hostile: a self-loop inside an indirect table is bounded by the table size", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  const table = h.alloc(32);
  h.memory.writeU64(table, 0x100000n);
  h.memory.writeU32(table + 8, 8);
  h.memory.writeU16(table + 12, W | N);
  h.memory.writeU16(table + 14, 0);
  q.writeDesc(0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
});

test("hostile: avail.idx claiming more entries than the queue size", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.writeDesc(0, 0x100000, 8, W, 0);
  q.setAvailIdx(1000);
  q.kick();
  assert.ok(broken(h));
  assert.equal(q.usedIdx(), 0);
});

test("hostile: a head index outside the descriptor table", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.publish(0xffff);
  q.kick();
  assert.ok(broken(h));
});

test("hostile: a next index outside the descriptor table", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.writeDesc(0, 0x100000, 8, W | N, 999);
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
});

for (const [what, addr, len] of [
  ["past the end of guest memory", MEM_SIZE - 4, 8],
  ["far outside guest memory", 0x40_0000_0000, 8],
  ["at the top of the 64-bit space", 0xffff_ffff_ffff_fff0n, 8],
  ["with a length of 4 GiB", 0x100000, 0xffffffff],
] as const) {
  test(`hostile: a buffer ${what} is refused and guest memory untouched`, () => {
    const h = rng();
    h.init();
    const q = h.queue(0);
    q.writeDesc(0, addr, len, W, 0);
    q.publish(0);
    q.kick();
    assert.ok(broken(h));
    assert.equal(q.usedIdx(), 0);
    assert.equal(h.memory.readU32(MEM_SIZE - 4), 0, "nothing written at the end of memory");
  });
}

test("hostile: a chain describing more bytes than the chain bound", () => {
  const h = rng({ maxChainBytes: 64 * 1024 });
  h.init();
  const q = h.queue(0);
  for (let i = 0; i < 4; i++) q.writeDesc(i, 0x100000, 32 * 1024, W | (i < 3 ? N : 0), i + 1);
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
});

test("hostile: an indirect table with a length that is not a multiple of 16, or too long", () => {
  for (const len of [0, 15, 16 * 5000]) {
    const h = rng();
    h.init();
    const q = h.queue(0);
    q.writeDesc(0, 0x100000, len, VIRTQ_DESC_F_INDIRECT, 0);
    q.publish(0);
    q.kick();
    assert.ok(broken(h), `indirect length ${len}`);
  }
});

test("hostile: an indirect descriptor with NEXT, or nested in an indirect table", () => {
  {
    const h = rng();
    h.init();
    const q = h.queue(0);
    q.writeDesc(0, 0x100000, 16, VIRTQ_DESC_F_INDIRECT | N, 1);
    q.publish(0);
    q.kick();
    assert.ok(broken(h), "INDIRECT|NEXT");
  }
  {
    const h = rng();
    h.init();
    const q = h.queue(0);
    const table = h.alloc(16);
    h.memory.writeU64(table, BigInt(table));
    h.memory.writeU32(table + 8, 16);
    h.memory.writeU16(table + 12, VIRTQ_DESC_F_INDIRECT);
    q.writeDesc(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    q.publish(0);
    q.kick();
    assert.ok(broken(h), "nested indirect");
  }
});

test("hostile: an indirect descriptor when INDIRECT_DESC was not negotiated", () => {
  const h = rng();
  h.init({ accept: (f) => f & ~(1n << 28n) });
  const q = h.queue(0);
  const table = h.alloc(16);
  h.memory.writeU64(table, 0x100000n);
  h.memory.writeU32(table + 8, 8);
  h.memory.writeU16(table + 12, W);
  q.writeDesc(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
});

test("hostile: a device-readable buffer after a device-writable one", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.writeDesc(0, 0x100000, 8, W | N, 1);
  q.writeDesc(1, 0x100100, 8, 0, 0);
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
});

/**
 * Guest memory whose indirect table changes while the device reads it (another vCPU writing):
 * right after the device reads the table, the guest turns it into a loop pointing outside memory.
 */
class ChangingMemory extends GuestMemory {
  table = -1;
  override read(addr: number, len: number): Uint8Array {
    const out = super.read(addr, len);
    if (addr === this.table) {
      this.writeU64(this.table, 0xdead_beef_0000n);
      this.writeU16(this.table + 12, W | N);
      this.writeU16(this.table + 14, 0);
    }
    return out;
  }
}

test("hostile: an indirect table that changes while read is used as first read", () => {
  const memory = new ChangingMemory([
    { base: 0, size: MEM_SIZE, backing: { kind: "shared", buffer: new SharedArrayBuffer(MEM_SIZE) } },
  ]);
  const h = rng({ memory });
  h.init();
  const q = h.queue(0);
  const table = h.alloc(16);
  memory.writeU64(table, 0x100000n);
  memory.writeU32(table + 8, 12);
  memory.writeU16(table + 12, W);
  memory.table = table;
  q.writeDesc(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
  q.publish(0);
  q.kick();
  assert.equal(broken(h), false);
  assert.deepEqual(q.takeUsed(), [{ id: 0, len: 12 }]);
});

test("hostile: a device broken by a bad chain works again after a reset", () => {
  const h = rng();
  h.init();
  const q = h.queue(0);
  q.writeDesc(0, 0x100000, 8, W | N, 0);
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
  h.init();
  assert.equal(broken(h), false);
  h.queue(0).add([{ writable: 8 }]);
  assert.equal(h.queue(0).takeUsed().length, 1);
});

/** Guest memory where every read of a descriptor's `next` field sees a new value (a vCPU rewriting the table). */
class RewritingMemory extends GuestMemory {
  table = -1;
  entries = 0;
  override readU16(addr: number): number {
    const v = super.readU16(addr);
    if (
      this.table >= 0 &&
      addr >= this.table &&
      addr < this.table + 16 * this.entries &&
      (addr - this.table) % 16 === 14
    ) {
      // Point at the next descriptor, forever: the chain never ends by itself.
      this.writeU16(addr, (v + 1) % this.entries);
    }
    return v;
  }
}

test("hostile: a descriptor table rewritten while the device walks it cannot make the walk endless", () => {
  const memory = new RewritingMemory([
    { base: 0, size: MEM_SIZE, backing: { kind: "shared", buffer: new SharedArrayBuffer(MEM_SIZE) } },
  ]);
  const h = rng({ memory });
  h.init();
  const q = h.queue(0);
  for (let i = 0; i < q.size; i++) q.writeDesc(i, 0x100000, 8, W | N, (i + 1) % q.size);
  memory.table = q.desc;
  memory.entries = q.size;
  q.publish(0);
  q.kick();
  assert.ok(broken(h));
  assert.equal(q.usedIdx(), 0);
});
