/**
 * virtio-net: with a fake TAP (frames recorded and injected in memory) everywhere, and with a real
 * TAP device when the test runs as root with /dev/net/tun (UDP both ways between the host's IP
 * stack and frames the test builds as the guest).
 */
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { setDeviceLogSink } from "../../../src/devices/guest_fault_log.js";
import {
  NetDevice,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_HDR_SIZE,
} from "../../../src/devices/virtio/net/device.js";
import { VIRTIO_ID_NET } from "../../../src/devices/virtio/virtio_device.js";
import { MmioReg } from "../../../src/devices/virtio/transport_mmio.js";
import { configureTapAddress, Tap, TUN_F_CSUM } from "../../../src/sys/tap.js";
import { VirtioTestHelper, waitFor } from "./virtio_test_helper.js";

setDeviceLogSink(() => {});
const GUEST_MAC = "52:54:00:12:34:56";

/** A TAP stand-in: records frames written, serves frames pushed into `inbox`. */
class FakeTap {
  readonly name = "fake0";
  readonly fd = -1;
  written: Uint8Array[] = [];
  inbox: Uint8Array[] = [];
  offload = -1;
  setOffload(flags: number): void {
    this.offload = flags;
  }
  read(buf: Uint8Array): number {
    const f = this.inbox.shift();
    if (f === undefined) return 0;
    buf.set(f);
    return f.length;
  }
  write(frame: Uint8Array): boolean {
    this.written.push(frame.slice());
    return true;
  }
  waitReadable(ms: number): Promise<boolean> {
    return new Promise((r) => setTimeout(() => r(this.inbox.length > 0), Math.min(ms, 10)));
  }
  close(): void {}
}

function fakeNet() {
  const tap = new FakeTap();
  const h = new VirtioTestHelper((m) => new NetDevice(m, { tap: tap as unknown as Tap, mac: GUEST_MAC }));
  h.init();
  return { h, tap, dev: h.device as NetDevice };
}

test("virtio-net announces its MAC and sets the TAP offloads the guest accepted", () => {
  const { h, tap, dev } = fakeNet();
  try {
    assert.equal(h.reg(MmioReg.DeviceId), VIRTIO_ID_NET);
    assert.deepEqual([...h.config(0, 6)], [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    assert.ok((h.transport.acceptedFeatures & VIRTIO_NET_F_MAC) !== 0n);
    assert.ok((tap.offload & TUN_F_CSUM) !== 0);
    h.init({ accept: (f) => f & ~VIRTIO_NET_F_GUEST_CSUM });
    assert.equal(tap.offload, 0);
  } finally {
    dev.close();
  }
});

test("virtio-net passes the guest's header and frame to the TAP as one write", () => {
  const { h, tap, dev } = fakeNet();
  try {
    const hdr = new Uint8Array(VIRTIO_NET_HDR_SIZE);
    hdr[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM: the host kernel completes the checksum
    const frame = new Uint8Array(60).fill(7);
    h.queue(1).add([{ data: hdr }, { data: frame }]);
    assert.equal(tap.written.length, 1);
    assert.equal(tap.written[0]!.length, 72);
    assert.equal(tap.written[0]![0], 1);
    assert.equal(dev.metrics.txPackets, 1);
    assert.equal(h.queue(1).takeUsed().length, 1);
  } finally {
    dev.close();
  }
});

test("virtio-net holds a received frame until the guest posts a buffer, and drops frames too big for it", async () => {
  const { h, tap, dev } = fakeNet();
  try {
    const packet = new Uint8Array(VIRTIO_NET_HDR_SIZE + 100).fill(9);
    tap.inbox.push(packet);
    await new Promise((r) => setTimeout(r, 30));
    const { addrs } = h.queue(0).add([{ writable: 2048 }]);
    await waitFor(() => h.queue(0).usedIdx() === 1);
    const [u] = h.queue(0).takeUsed();
    assert.equal(u!.len, 112);
    const got = h.memory.read(addrs[0]!, 112);
    assert.equal(got[10], 1, "num_buffers = 1");
    assert.equal(got[50], 9);
    tap.inbox.push(new Uint8Array(3000));
    h.queue(0).add([{ writable: 1024 }]);
    await waitFor(() => dev.metrics.rxDropped === 1);
  } finally {
    dev.close();
  }
});

function ipChecksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An Ethernet + IPv4 + UDP frame (UDP checksum 0: none, allowed over IPv4). */
function udpFrame(
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  src: number[],
  dst: number[],
  dport: number,
  payload: Uint8Array,
) {
  const f = new Uint8Array(14 + 20 + 8 + payload.length);
  const dv = new DataView(f.buffer);
  f.set(dstMac, 0);
  f.set(srcMac, 6);
  dv.setUint16(12, 0x0800);
  const ip = f.subarray(14, 34);
  ip[0] = 0x45;
  dv.setUint16(16, 20 + 8 + payload.length);
  ip[8] = 64;
  ip[9] = 17;
  ip.set(src, 12);
  ip.set(dst, 16);
  dv.setUint16(24, ipChecksum(ip));
  dv.setUint16(34, 40000);
  dv.setUint16(36, dport);
  dv.setUint16(38, 8 + payload.length);
  f.set(payload, 42);
  return f;
}

test("virtio-net over a real TAP: UDP from the guest reaches the host and back", async (t) => {
  if (process.getuid?.() !== 0 || !existsSync("/dev/net/tun")) {
    t.skip("needs root and /dev/net/tun to create a TAP device");
    return;
  }
  let tap: Tap;
  try {
    tap = Tap.open("vslnet%d");
  } catch (err) {
    t.skip(`cannot create a TAP device here: ${(err as Error).message}`);
    return;
  }
  const h = new VirtioTestHelper((m) => new NetDevice(m, { tap, mac: GUEST_MAC }));
  const dev = h.device as NetDevice;
  const host = createSocket("udp4");
  try {
    try {
      configureTapAddress(tap.name, "10.213.7.1/24");
      execFileSync("ip", ["neigh", "replace", "10.213.7.2", "lladdr", GUEST_MAC, "dev", tap.name]);
    } catch (err) {
      t.skip(`cannot configure the TAP with ip(8) here: ${(err as Error).message}`);
      return;
    }
    h.init();
    const hostMac = Uint8Array.from(
      readFileSync(`/sys/class/net/${tap.name}/address`, "utf8")
        .trim()
        .split(":")
        .map((x) => Number.parseInt(x, 16)),
    );
    await new Promise<void>((r) => host.bind(0, "10.213.7.1", () => r()));
    const port = host.address().port;

    // Guest to host.
    const got = new Promise<string>((r) => host.once("message", (m) => r(m.toString())));
    const frame = udpFrame(
      hostMac,
      dev.mac,
      [10, 213, 7, 2],
      [10, 213, 7, 1],
      port,
      new TextEncoder().encode("hi host"),
    );
    h.queue(1).add([{ data: new Uint8Array(VIRTIO_NET_HDR_SIZE) }, { data: frame }]);
    assert.equal(await got, "hi host");

    // Host to guest: the neighbour entry sends it straight to the guest's MAC.
    const bufs = new Map<number, number>();
    for (let i = 0; i < 8; i++) {
      const { head, addrs } = h.queue(0).add([{ writable: 2048 }]);
      bufs.set(head, addrs[0]!);
    }
    host.send("hi guest", 7777, "10.213.7.2");
    let payload = "";
    await waitFor(() => {
      for (const u of h.queue(0).takeUsed()) {
        const b = h.memory.read(bufs.get(u.id)!, u.len).subarray(VIRTIO_NET_HDR_SIZE);
        const isUdp = b[12] === 0x08 && b[13] === 0x00 && b[23] === 17;
        if (isUdp && ((b[36]! << 8) | b[37]!) === 7777) payload = new TextDecoder().decode(b.subarray(42));
      }
      return payload !== "";
    }, 3000);
    assert.equal(payload, "hi guest");
  } finally {
    host.close();
    dev.close();
  }
});

test("virtio-net poll() moves frames synchronously, as the machine's run loop calls it", () => {
  const { h, tap, dev } = fakeNet();
  try {
    h.queue(0).add([{ writable: 2048 }]);
    tap.inbox.push(new Uint8Array(VIRTIO_NET_HDR_SIZE + 60).fill(3));
    assert.deepEqual(
      dev.waitFds().map((w) => w.events),
      [1],
    );
    h.transport.poll();
    assert.deepEqual(
      h
        .queue(0)
        .takeUsed()
        .map((u) => u.len),
      [72],
    );
  } finally {
    dev.close();
  }
});

test("virtio-net drops a transmit chain larger than any frame, or shorter than its header", () => {
  const { h, tap, dev } = fakeNet();
  try {
    h.queue(1).add([{ data: new Uint8Array(70000) }]);
    h.queue(1).add([{ data: new Uint8Array(5) }]);
    assert.equal(tap.written.length, 0);
    assert.equal(dev.metrics.txDropped, 2);
    assert.equal(h.queue(1).takeUsed().length, 2, "both chains are returned to the guest");
  } finally {
    dev.close();
  }
});
