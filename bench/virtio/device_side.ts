/**
 * Device-side cost of virtio requests, no guest: the driver-side test helper builds chains in
 * guest memory and kicks the transport, as Linux would, and we time the device's work (chain
 * walking, bounds checks, file I/O from the page cache, used ring, interrupt). This is the
 * ceiling the guest-level benchmark (dd inside a booted guest, against QEMU) can reach.
 *
 *   npx tsc -p . && node dist/bench/virtio/device_side.js
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BlkDevice, VIRTIO_BLK_T_IN } from "../../src/devices/virtio/blk/device.js";
import { RngDevice } from "../../src/devices/virtio/rng/device.js";
import { VirtioTestHelper } from "../../test/devices/virtio/virtio_test_helper.js";

const dir = mkdtempSync(join(tmpdir(), "vessel-bench-virtio-"));
const IMAGE_SIZE = 64 * 1024 * 1024;
const image = join(dir, "disk.img");
writeFileSync(image, new Uint8Array(IMAGE_SIZE).fill(1));

function header(type: number, sector: number): Uint8Array {
  const h = new Uint8Array(16);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, type, true);
  dv.setBigUint64(8, BigInt(sector), true);
  return h;
}

function blkReads(label: string, blockSize: number, random: boolean, seconds: number): void {
  const h = new VirtioTestHelper((m) => new BlkDevice(m, { path: image }));
  h.init({ queueSizes: [256] });
  const q = h.queue(0);
  const sectorsPerBlock = blockSize / 512;
  const blocks = IMAGE_SIZE / blockSize;
  let n = 0;
  let block = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(seconds * 1e9);
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < 64; i++) {
      block = random ? Math.floor(Math.random() * blocks) : (block + 1) % blocks;
      q.add(
        [
          { data: header(VIRTIO_BLK_T_IN, block * sectorsPerBlock) },
          { writable: blockSize },
          { writable: 1 },
        ],
        {
          indirect: true,
        },
      );
      q.takeUsed();
      h.ackInterrupt();
      n++;
    }
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const perSec = n / secs;
  console.log(
    `${label}: ${Math.round(perSec)} requests/s, ${((perSec * blockSize) / 1e6).toFixed(1)} MB/s, ${(1e6 / perSec).toFixed(1)} us/request`,
  );
  h.transport.close();
}

/** Round trips through the I/O thread: notify, worker serves, machine thread sees the interrupt in poll(). */
function blkThreaded(seconds: number): void {
  const h = new VirtioTestHelper((m) => new BlkDevice(m, { path: image, ioThread: true }));
  h.init({ queueSizes: [256] });
  const q = h.queue(0);
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(seconds * 1e9);
  while (process.hrtime.bigint() < end) {
    q.add([
      { data: header(VIRTIO_BLK_T_IN, (n * 8) % (IMAGE_SIZE / 512 - 8)) },
      { writable: 4096 },
      { writable: 1 },
    ]);
    while (!h.irq.high) h.transport.poll(true);
    h.ackInterrupt();
    q.takeUsed();
    n++;
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(
    `virtio-blk 4 KiB reads through the I/O thread, one at a time: ${Math.round(n / secs)} requests/s, ${((secs / n) * 1e6).toFixed(1)} us/round trip`,
  );
  h.transport.close();
}

function rngRequests(seconds: number): void {
  const h = new VirtioTestHelper((m) => new RngDevice(m));
  h.init();
  const q = h.queue(0);
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(seconds * 1e9);
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < 256; i++) {
      q.add([{ writable: 64 }]);
      q.takeUsed();
      n++;
    }
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(`virtio-rng 64-byte requests: ${Math.round(n / secs)} requests/s`);
}

try {
  blkReads("virtio-blk 4 KiB random reads", 4096, true, 2);
  blkReads("virtio-blk 64 KiB sequential reads", 65536, false, 2);
  blkThreaded(2);
  rngRequests(1);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
