/**
 * The host side of virtio-vsock over Unix sockets, the way Firecracker's vsock does it
 * (docs/vsock.md, src/vmm/src/devices/virtio/vsock/unix/muxer.rs):
 *
 * - host to guest: a host program connects to `<udsPath>` and writes `CONNECT <port>\n`; the
 *   backend picks a local port, sends the guest an OP_REQUEST for `<port>`, and when the guest
 *   answers OP_RESPONSE writes `OK <local port>\n` back; then bytes flow both ways.
 * - guest to host: the guest connects to CID 2 port P; the backend connects to `<udsPath>_P`
 *   and answers OP_RESPONSE, or OP_RST if nobody listens there.
 *
 * Stream connections follow virtio 1.2 §5.10.6.3 credit flow control: we never send the guest more
 * than it advertised (buf_alloc - (rx_cnt - fwd_cnt)); we advertise VSOCK_BUF_ALLOC and count a
 * byte forwarded only once the host socket took it, so guest data buffered here is bounded.
 * Host data waiting for guest credit is bounded too (the host socket is paused above a limit).
 */
import { existsSync, lstatSync, unlinkSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { GuestFaultLog } from "../../guest_fault_log.js";
import { VirtioError } from "../virtio_device.js";
import type { VsockMetrics } from "./metrics.js";
import {
  VSOCK_HOST_CID,
  VSOCK_MAX_PKT_PAYLOAD,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_STREAM,
  VsockOp,
  type VsockPacket,
} from "./packet.js";

/** Receive buffer we advertise per connection (guest-to-host bytes in flight at most). */
export const VSOCK_BUF_ALLOC = 256 * 1024;
/** Host-to-guest bytes buffered per connection before the host socket is paused. */
export const VSOCK_MAX_PENDING = 256 * 1024;
/** How long the guest has to answer a host CONNECT (Firecracker: 2 s). */
export const VSOCK_CONNECT_TIMEOUT_MS = 2000;
/** The `CONNECT <port>\n` line is at most this long. */
const MAX_CONNECT_LINE = 32;
/** First local port given to host-initiated connections (Firecracker starts at 1 << 30). */
const FIRST_LOCAL_PORT = 1 << 30;
/** Connections at most (each holds a host socket and bounded buffers). */
export const VSOCK_MAX_CONNECTIONS = 1024;

type ConnState = "guest-connecting" | "host-connecting" | "established" | "closing";

interface Connection {
  /** Port on the host side (our src_port in packets to the guest). */
  localPort: number;
  /** Port on the guest side. */
  peerPort: number;
  state: ConnState;
  socket: Socket;
  /** Guest's receive buffer and how much of what we sent it has consumed (§5.10.6.3). */
  peerBufAlloc: number;
  peerFwdCnt: number;
  /** Bytes we sent the guest (u32 wrapping). */
  rxCnt: number;
  /** Bytes of the guest's that the host socket accepted (u32 wrapping), and the value last told. */
  fwdCnt: number;
  fwdCntSent: number;
  /** Host bytes waiting for guest credit. */
  pending: Uint8Array[];
  pendingBytes: number;
  paused: boolean;
  /** The host closed its side: send SHUTDOWN once pending bytes are delivered. */
  hostEnded: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface UnixBackendOptions {
  guestCid: bigint;
  udsPath: string;
  metrics: VsockMetrics;
  /** Called when packets are waiting for the guest (the device then fills rx buffers). */
  onRxReady: () => void;
}

export class VsockUnixBackend {
  private readonly conns = new Map<string, Connection>();
  private readonly control: VsockPacket[] = [];
  private server: Server | undefined;
  private nextLocalPort = FIRST_LOCAL_PORT;
  private readonly faults: GuestFaultLog;
  /** Resolves once the listening socket is bound (rejects with a VirtioError if it cannot be). */
  readonly listening: Promise<void>;

  constructor(private readonly options: UnixBackendOptions) {
    this.faults = new GuestFaultLog(`virtio-vsock(${options.udsPath})`);
    this.listening = this.listen();
    this.listening.catch((err: Error) => this.faults.report(err.message));
  }

  private listen(): Promise<void> {
    const path = this.options.udsPath;
    // A socket file left by a previous run that died is removed; anything else is not ours.
    if (existsSync(path) && lstatSync(path).isSocket()) unlinkSync(path);
    const server = createServer((socket) => this.acceptHost(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", (err) =>
        reject(
          new VirtioError(
            "VSOCK_LISTEN",
            `cannot listen on ${JSON.stringify(path)}: ${err.message}`,
            { path },
            err,
          ),
        ),
      );
      server.listen(path, () => resolve());
    });
  }

  private key(localPort: number, peerPort: number): string {
    return `${localPort}:${peerPort}`;
  }

  private packet(
    c: Connection,
    op: VsockOp,
    flags = 0,
    payload: Uint8Array = new Uint8Array(0),
  ): VsockPacket {
    c.fwdCntSent = c.fwdCnt;
    return {
      srcCid: VSOCK_HOST_CID,
      dstCid: this.options.guestCid,
      srcPort: c.localPort,
      dstPort: c.peerPort,
      type: VSOCK_TYPE_STREAM,
      op,
      flags,
      bufAlloc: VSOCK_BUF_ALLOC,
      fwdCnt: c.fwdCnt,
      payload,
    };
  }

  private sendControl(p: VsockPacket): void {
    this.control.push(p);
    this.options.onRxReady();
  }

  /** A reset for a packet that belongs to no connection (or that we refuse). */
  private rstFor(p: VsockPacket): void {
    this.options.metrics.resets++;
    this.sendControl({
      srcCid: VSOCK_HOST_CID,
      dstCid: this.options.guestCid,
      srcPort: p.dstPort,
      dstPort: p.srcPort,
      type: VSOCK_TYPE_STREAM,
      op: VsockOp.Rst,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
      payload: new Uint8Array(0),
    });
  }

  // ---- host-initiated connections -------------------------------------------------------------

  private acceptHost(socket: Socket): void {
    let line = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const nl = line.indexOf(0x0a);
      if (nl < 0) {
        if (line.length > MAX_CONNECT_LINE) socket.destroy();
        return;
      }
      socket.off("data", onData);
      socket.pause();
      const m = /^CONNECT (\d{1,10})$/.exec(line.subarray(0, nl).toString("latin1"));
      const port = m === null ? Number.NaN : Number(m[1]);
      if (!Number.isInteger(port) || port > 0xffffffff || this.conns.size >= VSOCK_MAX_CONNECTIONS) {
        socket.destroy();
        return;
      }
      const c = this.addConnection(this.allocLocalPort(), port, "guest-connecting", socket);
      const rest = line.subarray(nl + 1);
      if (rest.length > 0) this.queueHostData(c, rest);
      c.timer = setTimeout(() => {
        if (c.state === "guest-connecting") this.kill(c, true);
      }, VSOCK_CONNECT_TIMEOUT_MS);
      this.options.metrics.hostConnections++;
      this.sendControl(this.packet(c, VsockOp.Request));
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  }

  private allocLocalPort(): number {
    for (;;) {
      const port = this.nextLocalPort;
      this.nextLocalPort = this.nextLocalPort >= 0xfffffff0 ? FIRST_LOCAL_PORT : this.nextLocalPort + 1;
      if (![...this.conns.values()].some((c) => c.localPort === port)) return port;
    }
  }

  private addConnection(localPort: number, peerPort: number, state: ConnState, socket: Socket): Connection {
    const c: Connection = {
      localPort,
      peerPort,
      state,
      socket,
      peerBufAlloc: 0,
      peerFwdCnt: 0,
      rxCnt: 0,
      fwdCnt: 0,
      fwdCntSent: 0,
      pending: [],
      pendingBytes: 0,
      paused: true,
      hostEnded: false,
      timer: undefined,
    };
    this.conns.set(this.key(localPort, peerPort), c);
    socket.on("data", (chunk: Buffer) => this.queueHostData(c, chunk));
    socket.on("end", () => {
      c.hostEnded = true;
      this.options.onRxReady();
    });
    socket.on("close", () => {
      if (this.conns.get(this.key(c.localPort, c.peerPort)) !== c) return;
      if (c.state === "established") {
        // Deliver what the host wrote before closing, then SHUTDOWN (nextRx), then RST.
        c.hostEnded = true;
        this.options.onRxReady();
      } else if (c.state !== "closing") this.kill(c, true);
    });
    socket.on("error", () => {});
    return c;
  }

  private queueHostData(c: Connection, chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    c.pending.push(chunk);
    c.pendingBytes += chunk.length;
    if (c.pendingBytes >= VSOCK_MAX_PENDING && !c.paused) {
      c.paused = true;
      c.socket.pause();
    }
    this.options.onRxReady();
  }

  private resume(c: Connection): void {
    if (c.paused && c.state === "established" && c.pendingBytes < VSOCK_MAX_PENDING / 2) {
      c.paused = false;
      c.socket.resume();
    }
  }

  /** Ends a connection: RST to the guest if asked, the host socket destroyed, state dropped. */
  private kill(c: Connection, rst: boolean): void {
    if (c.timer !== undefined) clearTimeout(c.timer);
    this.conns.delete(this.key(c.localPort, c.peerPort));
    c.state = "closing";
    c.socket.destroy();
    if (rst) {
      this.options.metrics.resets++;
      this.sendControl(this.packet(c, VsockOp.Rst));
    }
  }

  // ---- packets from the guest -----------------------------------------------------------------

  /** Handles one packet the guest sent (its payload already bounded and copied by the device). */
  handleGuestPacket(p: VsockPacket): void {
    if (p.dstCid !== VSOCK_HOST_CID || p.srcCid !== this.options.guestCid) {
      this.options.metrics.badPackets++;
      this.faults.report(
        `packet from cid ${p.srcCid} to cid ${p.dstCid} dropped (guest is ${this.options.guestCid})`,
      );
      return;
    }
    if (p.type !== VSOCK_TYPE_STREAM) {
      if (p.op !== VsockOp.Rst) this.rstFor(p);
      return;
    }
    const c = this.conns.get(this.key(p.dstPort, p.srcPort));
    if (c === undefined) {
      if (p.op === VsockOp.Request) this.connectToHost(p);
      else if (p.op !== VsockOp.Rst) this.rstFor(p);
      return;
    }
    c.peerBufAlloc = p.bufAlloc;
    c.peerFwdCnt = p.fwdCnt;
    switch (p.op) {
      case VsockOp.Response:
        if (c.state !== "guest-connecting") {
          this.kill(c, true);
          return;
        }
        if (c.timer !== undefined) clearTimeout(c.timer);
        c.state = "established";
        c.socket.write(`OK ${c.localPort}\n`);
        this.resume(c);
        this.options.onRxReady();
        return;
      case VsockOp.Rw:
        if (c.state !== "established") {
          this.kill(c, true);
          return;
        }
        this.options.metrics.txBytes += p.payload.length;
        c.socket.write(p.payload, () => this.forwarded(c, p.payload.length));
        return;
      case VsockOp.CreditUpdate:
        this.options.onRxReady();
        return;
      case VsockOp.CreditRequest:
        this.sendControl(this.packet(c, VsockOp.CreditUpdate));
        return;
      case VsockOp.Shutdown: {
        const both = VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV;
        if ((p.flags & both) === both) {
          // The guest closed and waits for our RST (virtio_transport_close). The host socket
          // flushes what the guest wrote, then goes.
          if (c.timer !== undefined) clearTimeout(c.timer);
          this.conns.delete(this.key(c.localPort, c.peerPort));
          c.state = "closing";
          c.socket.end(() => c.socket.destroy());
          this.options.metrics.resets++;
          this.sendControl(this.packet(c, VsockOp.Rst));
        } else if ((p.flags & VSOCK_SHUTDOWN_SEND) !== 0) {
          // The guest will send no more: half-close the host socket.
          c.socket.end();
        }
        return;
      }
      case VsockOp.Rst:
        this.kill(c, false);
        return;
      default:
        this.kill(c, true);
    }
  }

  private forwarded(c: Connection, n: number): void {
    c.fwdCnt = (c.fwdCnt + n) >>> 0;
    // Tell the guest about freed buffer space before it can run dry (§5.10.6.3).
    if (c.state === "established" && (c.fwdCnt - c.fwdCntSent) >>> 0 >= VSOCK_BUF_ALLOC / 4) {
      this.sendControl(this.packet(c, VsockOp.CreditUpdate));
    }
  }

  private connectToHost(p: VsockPacket): void {
    if (this.conns.size >= VSOCK_MAX_CONNECTIONS) {
      this.rstFor(p);
      return;
    }
    const path = `${this.options.udsPath}_${p.dstPort}`;
    const socket = createConnection(path);
    socket.pause();
    const c = this.addConnection(p.dstPort, p.srcPort, "host-connecting", socket);
    c.peerBufAlloc = p.bufAlloc;
    c.peerFwdCnt = p.fwdCnt;
    socket.once("connect", () => {
      if (c.state !== "host-connecting") return;
      c.state = "established";
      this.options.metrics.guestConnections++;
      this.sendControl(this.packet(c, VsockOp.Response));
      this.resume(c);
    });
    socket.once("error", () => {
      if (c.state === "host-connecting") this.kill(c, true);
    });
  }

  // ---- packets to the guest -------------------------------------------------------------------

  /** True if a packet is waiting for an rx buffer. */
  hasRx(): boolean {
    if (this.control.length > 0) return true;
    for (const c of this.conns.values()) if (this.sendable(c) > 0 || this.wantsShutdown(c)) return true;
    return false;
  }

  private credit(c: Connection): number {
    return Math.max(0, c.peerBufAlloc - ((c.rxCnt - c.peerFwdCnt) >>> 0));
  }

  private sendable(c: Connection): number {
    return c.state === "established" ? Math.min(c.pendingBytes, this.credit(c)) : 0;
  }

  private wantsShutdown(c: Connection): boolean {
    return c.state === "established" && c.hostEnded && c.pendingBytes === 0;
  }

  /** The next packet for the guest, its payload at most `maxPayload` bytes; undefined if none. */
  nextRx(maxPayload: number): VsockPacket | undefined {
    const ctl = this.control.shift();
    if (ctl !== undefined) return ctl;
    for (const c of this.conns.values()) {
      const n = Math.min(this.sendable(c), maxPayload, VSOCK_MAX_PKT_PAYLOAD);
      if (n > 0) {
        const payload = this.take(c, n);
        c.rxCnt = (c.rxCnt + n) >>> 0;
        this.options.metrics.rxBytes += n;
        // Round robin: the connection goes to the back of the map's order.
        this.conns.delete(this.key(c.localPort, c.peerPort));
        this.conns.set(this.key(c.localPort, c.peerPort), c);
        this.resume(c);
        return this.packet(c, VsockOp.Rw, 0, payload);
      }
      if (this.wantsShutdown(c)) {
        c.state = "closing";
        c.timer = setTimeout(() => this.kill(c, true), VSOCK_CONNECT_TIMEOUT_MS);
        return this.packet(c, VsockOp.Shutdown, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
      }
    }
    return undefined;
  }

  private take(c: Connection, n: number): Uint8Array {
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const head = c.pending[0]!;
      const k = Math.min(head.length, n - at);
      out.set(head.subarray(0, k), at);
      at += k;
      if (k === head.length) c.pending.shift();
      else c.pending[0] = head.subarray(k);
    }
    c.pendingBytes -= n;
    return out;
  }

  /** The driver reset the device: every connection is gone (the guest forgot them). */
  reset(): void {
    for (const c of [...this.conns.values()]) {
      if (c.timer !== undefined) clearTimeout(c.timer);
      c.socket.destroy();
    }
    this.conns.clear();
    this.control.length = 0;
  }

  /** Stops listening and removes the socket file. */
  close(): void {
    this.reset();
    this.server?.close();
    this.server = undefined;
    try {
      if (existsSync(this.options.udsPath)) unlinkSync(this.options.udsPath);
    } catch {
      // already gone
    }
  }

  /** Number of live connections (statistics, tests). */
  get connectionCount(): number {
    return this.conns.size;
  }
}
