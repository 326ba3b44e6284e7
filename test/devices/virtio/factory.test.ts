import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { MmioBus } from "../../../src/bus/mmio_bus.js";
import {
  attachVirtioDevices,
  createVirtioDevice,
  virtioMmioCmdlineArg,
  virtioMmioSlot,
} from "../../../src/devices/virtio/factory.js";
import { VIRTIO_MMIO_MAGIC } from "../../../src/devices/virtio/transport_mmio.js";
import {
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_CONSOLE,
  VIRTIO_ID_RNG,
  VIRTIO_ID_VSOCK,
} from "../../../src/devices/virtio/virtio_device.js";
import { GuestMemory } from "../../../src/memory/guest_memory.js";
import { VIRTIO_IRQ_BASE, VIRTIO_MMIO_START } from "../../../src/memory/layout.js";
import { TestIrq } from "./virtio_test_helper.js";

const dir = mkdtempSync(join(tmpdir(), "vessel-virtio-factory-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("virtio factory places slot i at VIRTIO_MMIO_START + i*4K with GSI VIRTIO_IRQ_BASE + i", () => {
  assert.deepEqual(virtioMmioSlot(2), {
    base: VIRTIO_MMIO_START + 0x2000,
    size: 0x1000,
    irq: VIRTIO_IRQ_BASE + 2,
  });
  assert.equal(virtioMmioCmdlineArg(0), `virtio_mmio.device=4K@0xd0000000:${VIRTIO_IRQ_BASE}`);
  assert.throws(() => virtioMmioSlot(99), /slot 99 does not exist/);
});

test("virtio factory attaches blk, rng, console and vsock devices on the MMIO bus", () => {
  const image = join(dir, "d.img");
  writeFileSync(image, new Uint8Array(4096));
  const memory = GuestMemory.shared([{ base: 0, size: 1 << 20 }]);
  const mmio = new MmioBus();
  const lines = new Map<number, TestIrq>();
  const transports = attachVirtioDevices(
    [
      { kind: "blk", path: image, readOnly: true },
      { kind: "rng" },
      { kind: "console" },
      { kind: "vsock", cid: 3, udsPath: join(dir, "v.sock") },
    ],
    {
      memory,
      mmio,
      irqLine: (gsi) => {
        const l = new TestIrq();
        lines.set(gsi, l);
        return l;
      },
    },
  );
  try {
    const ids = [0, 1, 2, 3].map((i) => mmio.read(virtioMmioSlot(i).base + 8, 4));
    assert.deepEqual(ids, [VIRTIO_ID_BLOCK, VIRTIO_ID_RNG, VIRTIO_ID_CONSOLE, VIRTIO_ID_VSOCK]);
    assert.equal(mmio.read(virtioMmioSlot(3).base, 4), VIRTIO_MMIO_MAGIC);
    assert.deepEqual(
      [...lines.keys()],
      [0, 1, 2, 3].map((i) => VIRTIO_IRQ_BASE + i),
    );
    assert.ok(existsSync(join(dir, "v.sock")), "vsock listens on its Unix socket");
  } finally {
    for (const t of transports) t.close();
  }
});

test("virtio factory reports a missing disk image by name", () => {
  const memory = GuestMemory.shared([{ base: 0, size: 1 << 20 }]);
  assert.throws(
    () => createVirtioDevice({ kind: "blk", path: join(dir, "nope.img") }, { memory, irq: new TestIrq() }),
    /nope\.img/,
  );
});
