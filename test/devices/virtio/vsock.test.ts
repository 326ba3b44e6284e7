/**
 * virtio-vsock with real Unix sockets: the test plays the guest's vsock driver through the queues
 * and a host program through `<uds>` (CONNECT <port>) and `<uds>_<port>` listeners.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setDeviceLogSink } from "../../../src/devices/guest_fault_log.js";
import { VIRTIO_ID_VSOCK } from "../../../src/devices/virtio/virtio_device.js";
import { MmioReg } from "../../../src/devices/virtio/transport_mmio.js";
import { VsockDevice } from "../../../src/devices/virtio/vsock/device.js";
import {
  decodeHeader,
  encodeHeader,
  VSOCK_HDR_SIZE,
  VsockOp,
  type VsockPacket,
} from "../../../src/devices/virtio/vsock/packet.js";
import { VirtioTestHelper, waitFor } from "./virtio_test_helper.js";

setDeviceLogSink(() => {});
const dir = mkdtempSync(join(tmpdir(), "vessel-vsock-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** The guest's side of vsock: rx buffers posted, packets read from used rx, packets sent on tx. */
class GuestVsock {
  readonly h: VirtioTestHelper;
  readonly dev: VsockDevice;
  readonly uds: string;
  private readonly rxBufs = new Map<number, number>();
  readonly received: VsockPacket[] = [];
  /** The machine's run loop, here: the device services its host sockets when polled. */
  private readonly poller: NodeJS.Timeout;

  constructor(
    readonly bufAlloc = 64 * 1024,
    rxBufSize = 4096,
  ) {
    this.uds = join(dir, `v${n++}.sock`);
    this.h = new VirtioTestHelper((m) => new VsockDevice(m, { cid: 3, udsPath: this.uds }));
    this.dev = this.h.device as VsockDevice;
    this.h.init({ queueSizes: [64, 64, 64] });
    for (let i = 0; i < 32; i++) this.postRx(rxBufSize);
    this.poller = setInterval(() => this.h.transport.poll(), 1);
  }

  postRx(size: number): void {
    const { head, addrs } = this.h.queue(0).add([{ writable: size }]);
    this.rxBufs.set(head, addrs[0]!);
  }

  /** Moves used rx buffers into `received` and reposts them. */
  poll(): VsockPacket[] {
    const fresh: VsockPacket[] = [];
    for (const u of this.h.queue(0).takeUsed()) {
      const addr = this.rxBufs.get(u.id)!;
      const bytes = this.h.memory.read(addr, u.len);
      const { packet, len } = decodeHeader(bytes);
      packet.payload = bytes.subarray(VSOCK_HDR_SIZE, VSOCK_HDR_SIZE + len);
      fresh.push(packet);
      this.rxBufs.delete(u.id);
      this.postRx(4096);
    }
    this.received.push(...fresh);
    return fresh;
  }

  async expect(pred: (p: VsockPacket) => boolean): Promise<VsockPacket> {
    let found: VsockPacket | undefined;
    await waitFor(() => {
      this.poll();
      const i = this.received.findIndex(pred);
      if (i >= 0) found = this.received.splice(i, 1)[0];
      return found !== undefined;
    });
    return found!;
  }

  send(p: Partial<VsockPacket> & { op: VsockOp; srcPort: number; dstPort: number }): void {
    const full: VsockPacket = {
      srcCid: 3n,
      dstCid: 2n,
      type: 1,
      flags: 0,
      bufAlloc: this.bufAlloc,
      fwdCnt: 0,
      payload: new Uint8Array(0),
      ...p,
    };
    const bufs = [{ data: encodeHeader(full) }];
    if (full.payload.length > 0) bufs.push({ data: full.payload });
    this.h.queue(1).add(bufs);
    this.h.queue(1).takeUsed();
  }

  close(): void {
    clearInterval(this.poller);
    this.dev.close();
  }
}

function readLine(sock: Socket): Promise<string> {
  return new Promise((resolve) => {
    let acc = "";
    const onData = (d: Buffer) => {
      acc += d.toString();
      const i = acc.indexOf("\n");
      if (i >= 0) {
        sock.off("data", onData);
        if (acc.length > i + 1) sock.unshift(Buffer.from(acc.slice(i + 1)));
        resolve(acc.slice(0, i));
      }
    };
    sock.on("data", onData);
  });
}

function readN(sock: Socket, len: number): Promise<string> {
  return new Promise((resolve) => {
    let acc = "";
    const onData = (d: Buffer) => {
      acc += d.toString();
      if (acc.length >= len) {
        sock.off("data", onData);
        resolve(acc);
      }
    };
    sock.on("data", onData);
  });
}

test("virtio-vsock announces the guest CID in its config space", async () => {
  const g = new GuestVsock();
  try {
    assert.equal(g.h.reg(MmioReg.DeviceId), VIRTIO_ID_VSOCK);
    assert.equal(g.h.transport.read(MmioReg.Config, 4), 3);
    assert.equal(g.h.transport.read(MmioReg.Config + 4, 4), 0);
  } finally {
    g.close();
  }
});

test("virtio-vsock: a host program connects with CONNECT <port> and echoes with the guest", async () => {
  const g = new GuestVsock();
  try {
    const host = createConnection(g.uds);
    host.write("CONNECT 1234\n");
    const req = await g.expect((p) => p.op === VsockOp.Request);
    assert.equal(req.dstPort, 1234);
    assert.equal(req.srcCid, 2n);
    assert.equal(req.dstCid, 3n);
    g.send({ op: VsockOp.Response, srcPort: 1234, dstPort: req.srcPort });
    assert.equal(await readLine(host), `OK ${req.srcPort}`);
    host.write("ping");
    const data = await g.expect((p) => p.op === VsockOp.Rw);
    assert.equal(dec(data.payload), "ping");
    const got = readN(host, 4);
    g.send({ op: VsockOp.Rw, srcPort: 1234, dstPort: req.srcPort, payload: enc("pong") });
    assert.equal(await got, "pong");
    // The guest closes: SHUTDOWN both ways; the host sees EOF and the guest gets its RST.
    const ended = new Promise<void>((r) => host.on("end", () => r()));
    g.send({ op: VsockOp.Shutdown, srcPort: 1234, dstPort: req.srcPort, flags: 3 });
    await g.expect((p) => p.op === VsockOp.Rst && p.dstPort === 1234);
    await ended;
    host.destroy();
    assert.equal(g.dev.backend.connectionCount, 0);
  } finally {
    g.close();
  }
});

test("virtio-vsock: a guest connection to CID 2 port P reaches <uds>_P and echoes", async () => {
  const g = new GuestVsock();
  const server = createServer((s) => {
    s.on("error", () => {}); // the backend closing a socket with unread data resets it
    s.pipe(s);
  });
  try {
    await new Promise<void>((r) => server.listen(`${g.uds}_5000`, () => r()));
    g.send({ op: VsockOp.Request, srcPort: 40000, dstPort: 5000 });
    const resp = await g.expect((p) => p.op === VsockOp.Response || p.op === VsockOp.Rst);
    assert.equal(resp.op, VsockOp.Response);
    assert.equal(resp.srcPort, 5000);
    assert.equal(resp.dstPort, 40000);
    g.send({ op: VsockOp.Rw, srcPort: 40000, dstPort: 5000, payload: enc("hello vsock") });
    let echoed = "";
    while (echoed.length < 11) {
      const p = await g.expect((x) => x.op === VsockOp.Rw);
      echoed += dec(p.payload);
    }
    assert.equal(echoed, "hello vsock");
    assert.equal(g.dev.metrics.guestConnections, 1);
  } finally {
    g.close();
    server.close();
  }
});

test("virtio-vsock: a guest connection to a port nobody listens on is reset", async () => {
  const g = new GuestVsock();
  try {
    g.send({ op: VsockOp.Request, srcPort: 40001, dstPort: 6000 });
    const p = await g.expect((x) => x.dstPort === 40001);
    assert.equal(p.op, VsockOp.Rst);
  } finally {
    g.close();
  }
});

test("virtio-vsock sends the guest no more than its advertised credit", async () => {
  const g = new GuestVsock(8);
  const server = createServer((s) => {
    s.on("error", () => {});
    s.write("0123456789abcdefghij");
  });
  try {
    await new Promise<void>((r) => server.listen(`${g.uds}_5001`, () => r()));
    g.send({ op: VsockOp.Request, srcPort: 40002, dstPort: 5001 });
    await g.expect((p) => p.op === VsockOp.Response);
    const first = await g.expect((p) => p.op === VsockOp.Rw);
    assert.equal(dec(first.payload), "01234567");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(
      g.poll().filter((p) => p.op === VsockOp.Rw).length,
      0,
      "nothing more until the guest frees buffer space",
    );
    g.send({ op: VsockOp.CreditUpdate, srcPort: 40002, dstPort: 5001, fwdCnt: 8 });
    const second = await g.expect((p) => p.op === VsockOp.Rw);
    assert.equal(dec(second.payload), "89abcdef");
  } finally {
    g.close();
    server.close();
  }
});

test("virtio-vsock drops hostile tx packets (4 GiB length, short header) and keeps working", async () => {
  const g = new GuestVsock();
  try {
    const hdr = encodeHeader({
      srcCid: 3n,
      dstCid: 2n,
      srcPort: 1,
      dstPort: 2,
      type: 1,
      op: VsockOp.Rw,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
      payload: new Uint8Array(0),
    });
    new DataView(hdr.buffer).setUint32(24, 0xffffffff, true);
    g.h.queue(1).add([{ data: hdr }]);
    g.h.queue(1).add([{ data: new Uint8Array(10) }]);
    assert.equal(g.dev.metrics.badPackets, 2);
    assert.equal(g.h.queue(1).takeUsed().length, 2);
    // A packet for a connection that does not exist is answered with RST.
    g.send({ op: VsockOp.Rw, srcPort: 7, dstPort: 8, payload: enc("x") });
    const p = await g.expect((x) => x.dstPort === 7);
    assert.equal(p.op, VsockOp.Rst);
  } finally {
    g.close();
  }
});

test("virtio-vsock: a host program that writes and closes gives the guest its bytes, then SHUTDOWN(SEND)", async () => {
  const g = new GuestVsock();
  try {
    const host = createConnection(g.uds);
    host.on("error", () => {});
    host.write("CONNECT 99\n");
    const req = await g.expect((p) => p.op === VsockOp.Request);
    g.send({ op: VsockOp.Response, srcPort: 99, dstPort: req.srcPort });
    assert.equal(await readLine(host), `OK ${req.srcPort}`);
    host.end("bye");
    const data = await g.expect((p) => p.op === VsockOp.Rw);
    assert.equal(dec(data.payload), "bye");
    const sd = await g.expect((p) => p.op === VsockOp.Shutdown);
    assert.equal(sd.flags, 2, "VIRTIO_VSOCK_SHUTDOWN_SEND: the host sends no more");
    host.destroy();
  } finally {
    g.close();
  }
});

test("virtio-vsock moves 1 MiB each way through an echo server within both sides' credit", async () => {
  const g = new GuestVsock(64 * 1024);
  const server = createServer((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  try {
    await new Promise<void>((r) => server.listen(`${g.uds}_5002`, () => r()));
    g.send({ op: VsockOp.Request, srcPort: 40003, dstPort: 5002 });
    const resp = await g.expect((p) => p.op === VsockOp.Response);
    let hostBufAlloc = resp.bufAlloc;
    let hostFwdCnt = resp.fwdCnt;
    const total = 1024 * 1024;
    const data = new Uint8Array(total);
    for (let i = 0; i < total; i++) data[i] = (i * 7) & 0xff;
    let sent = 0;
    let got = 0;
    const echoed = new Uint8Array(total);
    const deadline = Date.now() + 20000;
    while (got < total) {
      if (Date.now() > deadline) throw new Error(`stalled: sent ${sent}, echoed ${got}`);
      // Send what the host's credit allows, in 4 KiB packets.
      while (sent < total && hostBufAlloc - (sent - hostFwdCnt) >= 4096) {
        g.send({
          op: VsockOp.Rw,
          srcPort: 40003,
          dstPort: 5002,
          payload: data.subarray(sent, sent + 4096),
          fwdCnt: got,
        });
        sent += 4096;
      }
      await new Promise((r) => setTimeout(r, 1));
      let consumed = false;
      for (const p of g.poll()) {
        hostBufAlloc = p.bufAlloc;
        hostFwdCnt = p.fwdCnt;
        if (p.op === VsockOp.Rw) {
          echoed.set(p.payload, got);
          got += p.payload.length;
          consumed = true;
        }
      }
      g.received.length = 0;
      // The guest read what arrived: tell the host (Linux sends this once its buffer drains).
      if (consumed) g.send({ op: VsockOp.CreditUpdate, srcPort: 40003, dstPort: 5002, fwdCnt: got });
    }
    assert.deepEqual(echoed, data);
    assert.equal(g.dev.metrics.txBytes, total);
    assert.equal(g.dev.metrics.rxBytes, total);
  } finally {
    g.close();
    server.close();
  }
});

test("virtio-vsock returns rx buffers too small for a header unused and counts them", async () => {
  const g = new GuestVsock(64 * 1024, 16);
  try {
    g.send({ op: VsockOp.Request, srcPort: 40009, dstPort: 6001 }); // refused: an RST is queued
    await waitFor(() => g.dev.metrics.badPackets > 0);
    const used = g.h.queue(0).takeUsed();
    assert.ok(used.length > 0 && used.every((u) => u.len === 0), "16-byte buffers come back empty");
  } finally {
    g.close();
  }
});
