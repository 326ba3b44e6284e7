import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { setDeviceLogSink } from "../../../src/devices/guest_fault_log.js";
import {
  BlkDevice,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "../../../src/devices/virtio/blk/device.js";
import { VIRTIO_ID_BLOCK } from "../../../src/devices/virtio/virtio_device.js";
import { MmioReg } from "../../../src/devices/virtio/transport_mmio.js";
import { diskImages, header } from "./blk_fixture.js";
import { VirtioTestHelper } from "./virtio_test_helper.js";

setDeviceLogSink(() => {});
/** 64 KiB images: sector i is filled with the byte i. */
const { dir, image } = diskImages("vessel-blk-", 128);

function ranges(list: [number, number, number][]): Uint8Array {
  const out = new Uint8Array(16 * list.length);
  const dv = new DataView(out.buffer);
  list.forEach(([sector, num, flags], i) => {
    dv.setBigUint64(16 * i, BigInt(sector), true);
    dv.setUint32(16 * i + 8, num, true);
    dv.setUint32(16 * i + 12, flags, true);
  });
  return out;
}

function blk(path: string, readOnly = false): VirtioTestHelper {
  const h = new VirtioTestHelper(
    (memory) => new BlkDevice(memory, { path, readOnly, serial: "vessel-test-disk" }),
  );
  h.init();
  return h;
}

/** Sends one request; returns the used length, the status byte and the writable data. */
function request(h: VirtioTestHelper, hdr: Uint8Array, out?: Uint8Array, inLen = 0, indirect = false) {
  const bufs = [
    { data: hdr },
    ...(out ? [{ data: out }] : []),
    ...(inLen > 0 ? [{ writable: inLen }] : []),
    { writable: 1 },
  ];
  const { head, addrs } = h.queue(0).add(bufs, { indirect });
  const used = h.queue(0).takeUsed();
  assert.equal(used.length, 1);
  assert.equal(used[0]!.id, head);
  const status = h.memory.readU8(addrs[addrs.length - 1]!);
  const data = inLen > 0 ? h.memory.read(addrs[addrs.length - 2]!, inLen) : new Uint8Array();
  return { len: used[0]!.len, status, data };
}

test("virtio-blk announces its capacity, limits and features", () => {
  const h = blk(image());
  assert.equal(h.reg(MmioReg.DeviceId), VIRTIO_ID_BLOCK);
  const cfg = h.config(0, 16);
  const dv = new DataView(cfg.buffer);
  assert.equal(dv.getBigUint64(0, true), 128n);
  assert.ok(dv.getUint32(12, true) > 0, "seg_max");
  // 64-bit config read as two 32-bit reads, the way vm_get does it.
  assert.equal(h.transport.read(MmioReg.Config, 4), 128);
  assert.equal(h.transport.read(MmioReg.Config + 4, 4), 0);
  const f = h.transport.acceptedFeatures;
  assert.ok((f & VIRTIO_BLK_F_FLUSH) !== 0n && (f & VIRTIO_BLK_F_DISCARD) !== 0n);
  assert.equal(f & VIRTIO_BLK_F_RO, 0n);
});

test("virtio-blk reads sectors into guest memory, directly and through indirect descriptors", () => {
  const h = blk(image());
  const r = request(h, header(VIRTIO_BLK_T_IN, 3), undefined, 1024);
  assert.equal(r.status, VIRTIO_BLK_S_OK);
  assert.equal(r.len, 1025);
  assert.ok(r.data.subarray(0, 512).every((b) => b === 3));
  assert.ok(r.data.subarray(512).every((b) => b === 4));
  const r2 = request(h, header(VIRTIO_BLK_T_IN, 127), undefined, 512, true);
  assert.equal(r2.status, VIRTIO_BLK_S_OK);
  assert.ok(r2.data.every((b) => b === 127));
});

test("virtio-blk writes sectors to the image and flushes them with fsync", () => {
  const path = image();
  const h = blk(path);
  const data = new Uint8Array(512).fill(0xab);
  assert.equal(request(h, header(VIRTIO_BLK_T_OUT, 10), data).status, VIRTIO_BLK_S_OK);
  assert.equal(request(h, header(VIRTIO_BLK_T_FLUSH, 0)).status, VIRTIO_BLK_S_OK);
  const file = readFileSync(path);
  assert.ok(file.subarray(10 * 512, 11 * 512).every((b) => b === 0xab));
  assert.ok(file.subarray(11 * 512, 12 * 512).every((b) => b === 11));
  const dev = h.device as BlkDevice;
  assert.equal(dev.metrics.writes, 1);
  assert.equal(dev.metrics.flushes, 1);
});

test("virtio-blk answers GET_ID with its serial", () => {
  const h = blk(image());
  const r = request(h, header(VIRTIO_BLK_T_GET_ID, 0), undefined, 20);
  assert.equal(r.status, VIRTIO_BLK_S_OK);
  assert.equal(new TextDecoder().decode(r.data).replace(/\0+$/, ""), "vessel-test-disk");
});

test("virtio-blk discard and write-zeroes make sectors read as zeros, keeping the file size", () => {
  const path = image();
  const h = blk(path);
  assert.equal(request(h, header(VIRTIO_BLK_T_DISCARD, 0), ranges([[8, 8, 0]])).status, VIRTIO_BLK_S_OK);
  assert.equal(
    request(
      h,
      header(VIRTIO_BLK_T_WRITE_ZEROES, 0),
      ranges([
        [32, 2, 1],
        [40, 1, 0],
      ]),
    ).status,
    VIRTIO_BLK_S_OK,
  );
  const file = readFileSync(path);
  assert.equal(statSync(path).size, 128 * 512);
  assert.ok(file.subarray(8 * 512, 16 * 512).every((b) => b === 0));
  assert.ok(file.subarray(32 * 512, 34 * 512).every((b) => b === 0));
  assert.ok(file.subarray(40 * 512, 41 * 512).every((b) => b === 0));
  assert.ok(file.subarray(16 * 512, 17 * 512).every((b) => b === 16));
  assert.ok(file.subarray(41 * 512, 42 * 512).every((b) => b === 41));
  // Unknown flags on a discard are unsupported.
  assert.equal(request(h, header(VIRTIO_BLK_T_DISCARD, 0), ranges([[0, 1, 1]])).status, VIRTIO_BLK_S_UNSUPP);
});

test("virtio-blk read-only rejects writes, discards and write-zeroes with IOERR and leaves the image alone", () => {
  const path = image();
  const before = readFileSync(path);
  const h = blk(path, true);
  assert.ok((h.transport.acceptedFeatures & VIRTIO_BLK_F_RO) !== 0n);
  assert.equal(request(h, header(VIRTIO_BLK_T_OUT, 0), new Uint8Array(512)).status, VIRTIO_BLK_S_IOERR);
  assert.equal(request(h, header(VIRTIO_BLK_T_DISCARD, 0), ranges([[0, 8, 0]])).status, VIRTIO_BLK_S_IOERR);
  assert.equal(
    request(h, header(VIRTIO_BLK_T_WRITE_ZEROES, 0), ranges([[0, 8, 0]])).status,
    VIRTIO_BLK_S_IOERR,
  );
  assert.equal(request(h, header(VIRTIO_BLK_T_IN, 0), undefined, 512).status, VIRTIO_BLK_S_OK);
  assert.deepEqual(readFileSync(path), before);
});

test("virtio-blk rejects requests outside the disk or not in whole sectors", () => {
  const h = blk(image());
  assert.equal(request(h, header(VIRTIO_BLK_T_IN, 128), undefined, 512).status, VIRTIO_BLK_S_IOERR);
  assert.equal(request(h, header(VIRTIO_BLK_T_IN, 127), undefined, 1024).status, VIRTIO_BLK_S_IOERR);
  assert.equal(request(h, header(VIRTIO_BLK_T_IN, 2 ** 60), undefined, 512).status, VIRTIO_BLK_S_IOERR);
  assert.equal(request(h, header(VIRTIO_BLK_T_OUT, 0), new Uint8Array(100)).status, VIRTIO_BLK_S_IOERR);
  assert.equal(
    request(h, header(VIRTIO_BLK_T_DISCARD, 0), ranges([[120, 0xffffffff, 0]])).status,
    VIRTIO_BLK_S_IOERR,
  );
  assert.equal(request(h, header(99, 0)).status, VIRTIO_BLK_S_UNSUPP);
});

test("virtio-blk returns a chain without header or status byte with length 0 and goes on", () => {
  const h = blk(image());
  h.queue(0).add([{ data: new Uint8Array(4) }]);
  assert.deepEqual(
    h
      .queue(0)
      .takeUsed()
      .map((u) => u.len),
    [0],
  );
  assert.equal(request(h, header(VIRTIO_BLK_T_IN, 0), undefined, 512).status, VIRTIO_BLK_S_OK);
});

test("virtio-blk refuses to open a missing image with a message naming it", () => {
  assert.throws(
    () => new VirtioTestHelper((m) => new BlkDevice(m, { path: join(dir, "missing.img") })),
    /cannot open disk image .*missing\.img/,
  );
});

test("virtio-blk: data written and flushed survives a SIGKILL of the process that owns the device", async () => {
  const path = image();
  const helper = new URL("./virtio_test_helper.js", import.meta.url).href;
  const blkUrl = new URL("../../../src/devices/virtio/blk/device.js", import.meta.url).href;
  const script = `
    import { VirtioTestHelper } from ${JSON.stringify(helper)};
    import { BlkDevice } from ${JSON.stringify(blkUrl)};
    const h = new VirtioTestHelper((m) => new BlkDevice(m, { path: ${JSON.stringify(path)} }));
    h.init();
    const hdr = (type, sector) => { const b = new Uint8Array(16); const v = new DataView(b.buffer); v.setUint32(0, type, true); v.setBigUint64(8, BigInt(sector), true); return b; };
    h.queue(0).add([{ data: hdr(1, 20) }, { data: new Uint8Array(1024).fill(0x5a) }, { writable: 1 }]);
    h.queue(0).add([{ data: hdr(4, 0) }, { writable: 1 }]);
    process.stdout.write("flushed\\n");
    setInterval(() => {}, 1000);
  `;
  const { spawn } = await import("node:child_process");
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("flushed")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`child exited early with ${code}`)));
  });
  child.kill("SIGKILL");
  await new Promise((r) => child.on("exit", r));
  const file = readFileSync(path);
  assert.ok(file.subarray(20 * 512, 22 * 512).every((b) => b === 0x5a));
  assert.ok(file.subarray(22 * 512, 23 * 512).every((b) => b === 22));
});
