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
 * Sockets are raw non-blocking descriptors serviced by `poll()` (sys/unix_socket.ts), because the
 * machine worker's event loop does not turn while the guest runs; `waitFds()` lists what a waiter
 * thread should watch to wake the machine when the guest is idle.
 *
 * Stream connections follow virtio 1.2 §5.10.6.3 credit flow control: we read from a host socket
 * only as much as the guest has room for (buf_alloc - (rx_cnt - fwd_cnt)), so host data waits in
 * the host kernel, not here; we advertise VSOCK_BUF_ALLOC and count a guest byte forwarded only
 * once the host socket took it, so guest data buffered here is bounded by VSOCK_BUF_ALLOC too.
 */
import { existsSync, lstatSync, unlinkSync } from "node:fs";
import { POLLERR, POLLHUP, POLLIN, POLLOUT, poll as pollFds } from "../../../sys/libc.js";
import {
  acceptUnix,
  closeSocket,
  connectUnix,
  listenUnix,
  recvSome,
  sendSome,
  shutdownWrite,
} from "../../../sys/unix_socket.js";
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

/** Receive buffer we advertise per connection: guest-to-host bytes held here at most. */
export const VSOCK_BUF_ALLOC = 256 * 1024;
/** How long the guest has to answer a host CONNECT, and a closing connection to drain (Firecracker: 2 s). */
export const VSOCK_TIMEOUT_MS = 2000;
/** The `CONNECT <port>\n` line is at most this long. */
const MAX_CONNECT_LINE = 32;
/** First local port given to host-initiated connections (Firecracker starts at 1 << 30). */
const FIRST_LOCAL_PORT = 1 << 30;
/** Connections at most (each holds a host socket and bounded buffers), and half-open accepts. */
export const VSOCK_MAX_CONNECTIONS = 1024;
const MAX_PENDING_ACCEPTS = 64;
/** Unforced polls closer together than this are skipped. */
export const POLL_INTERVAL_MS = 0.5;

type ConnState = "guest-connecting" | "established" | "closing";

interface Connection {
  /** Port on the host side (our src_port in packets to the guest). */
  localPort: number;
  /** Port on the guest side. */
  peerPort: number;
  state: ConnState;
  fd: number;
  /** Guest's receive buffer and how much of what we sent it has consumed (§5.10.6.3). */
  peerBufAlloc: number;
  peerFwdCnt: number;
  /** Bytes we sent the guest (u32 wrapping). */
  rxCnt: number;
  /** Guest bytes the host socket accepted (u32 wrapping), and the value last told the guest. */
  fwdCnt: number;
  fwdCntSent: number;
  /** poll(2) said the host socket has data or end of stream. */
  readable: boolean;
  /** The host socket reached end of stream; SHUTDOWN(SEND) sent to the guest once. */
  hostEof: boolean;
  shutdownSent: boolean;
  /** Guest bytes waiting for room in the host socket. */
  out: Uint8Array[];
  outBytes: number;
  /** The guest will send no more: half-close the host socket once `out` is empty. */
  guestDone: boolean;
  /** Bytes that followed the CONNECT line, for the guest once connected. */
  early: Uint8Array | undefined;
  /** Date.now() deadline of a CONNECT awaiting the guest's answer, or of a closing drain. */
  deadline: number | undefined;
}

interface PendingAccept {
  fd: number;
  line: Uint8Array;
  deadline: number;
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
  private readonly accepts: PendingAccept[] = [];
  private listenFd: number;
  private nextLocalPort = FIRST_LOCAL_PORT;
  private readonly faults: GuestFaultLog;
  private readonly scratch = new Uint8Array(VSOCK_MAX_PKT_PAYLOAD);
  private lastPoll = -Infinity;

  constructor(private readonly options: UnixBackendOptions) {
    this.faults = new GuestFaultLog(`virtio-vsock(${options.udsPath})`);
    const path = options.udsPath;
    // A socket file left by a previous run that died is removed; anything else is not ours.
    if (existsSync(path) && lstatSync(path).isSocket()) unlinkSync(path);
    try {
      this.listenFd = listenUnix(path);
    } catch (err) {
      throw new VirtioError(
        "VSOCK_LISTEN",
        `cannot listen on vsock socket ${JSON.stringify(path)}: ${(err as Error).message}`,
        { path },
        err,
      );
    }
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

  private newConnection(localPort: number, peerPort: number, state: ConnState, fd: number): Connection {
    const c: Connection = {
      localPort,
      peerPort,
      state,
      fd,
      peerBufAlloc: 0,
      peerFwdCnt: 0,
      rxCnt: 0,
      fwdCnt: 0,
      fwdCntSent: 0,
      readable: false,
      hostEof: false,
      shutdownSent: false,
      out: [],
      outBytes: 0,
      guestDone: false,
      early: undefined,
      deadline: undefined,
    };
    this.conns.set(this.key(localPort, peerPort), c);
    return c;
  }

  /** Ends a connection: RST to the guest if asked, the host socket closed, state dropped. */
  private kill(c: Connection, rst: boolean): void {
    this.conns.delete(this.key(c.localPort, c.peerPort));
    if (c.fd >= 0) closeSocket(c.fd);
    c.fd = -1;
    c.state = "closing";
    if (rst) {
      this.options.metrics.resets++;
      this.sendControl(this.packet(c, VsockOp.Rst));
    }
  }

  // ---- host side, serviced by polling ---------------------------------------------------------

  /** Descriptors a waiter thread should watch to wake the machine (poll(2) events). */
  waitFds(): { fd: number; events: number }[] {
    const out = [{ fd: this.listenFd, events: POLLIN }];
    for (const a of this.accepts) out.push({ fd: a.fd, events: POLLIN });
    for (const c of this.conns.values()) {
      let events = 0;
      if (c.state === "established" && !c.readable && !c.hostEof && this.credit(c) > 0) events |= POLLIN;
      if (c.outBytes > 0) events |= POLLOUT;
      if (events !== 0) out.push({ fd: c.fd, events });
    }
    return out;
  }

  /**
   * Services the host sockets without blocking: new connections, CONNECT lines, readiness of
   * connected sockets, guest bytes waiting to be written, timeouts. Cheap when nothing happened
   * (one poll(2) with a zero timeout).
   */
  poll(force = false): void {
    // One poll(2) costs ~5 us through FFI: a run loop calling this after every exit is throttled to
    // one look per POLL_INTERVAL_MS, unless it knows something is ready (a waiter thread woke it).
    const t = performance.now();
    if (!force && t - this.lastPoll < POLL_INTERVAL_MS) return;
    this.lastPoll = t;
    const fds = this.waitFds();
    const revents = pollFds(fds, 0);
    let wake = false;
    const now = Date.now();
    if ((revents[0] ?? 0) !== 0) this.acceptAll(now);
    for (let i = 1; i < fds.length; i++) {
      const r = revents[i] ?? 0;
      if (r === 0) continue;
      const fd = fds[i]!.fd;
      const a = this.accepts.find((x) => x.fd === fd);
      if (a !== undefined) {
        this.readConnectLine(a);
        continue;
      }
      const c = [...this.conns.values()].find((x) => x.fd === fd);
      if (c === undefined) continue;
      if ((r & POLLOUT) !== 0 || (r & (POLLERR | POLLHUP)) !== 0) this.flushOut(c);
      if ((r & (POLLIN | POLLHUP | POLLERR)) !== 0 && c.state === "established") {
        c.readable = true;
        wake = true;
      }
    }
    for (const a of [...this.accepts]) {
      if (now > a.deadline) this.dropAccept(a);
    }
    for (const c of [...this.conns.values()]) {
      if (c.deadline !== undefined && now > c.deadline) this.kill(c, true);
    }
    if (wake) this.options.onRxReady();
  }

  private acceptAll(now: number): void {
    for (;;) {
      const fd = acceptUnix(this.listenFd);
      if (fd < 0) return;
      if (this.accepts.length >= MAX_PENDING_ACCEPTS || this.conns.size >= VSOCK_MAX_CONNECTIONS) {
        closeSocket(fd);
        continue;
      }
      this.accepts.push({ fd, line: new Uint8Array(0), deadline: now + VSOCK_TIMEOUT_MS });
    }
  }

  private dropAccept(a: PendingAccept): void {
    this.accepts.splice(this.accepts.indexOf(a), 1);
    closeSocket(a.fd);
  }

  /** Reads the `CONNECT <port>\n` line of an accepted host socket (bytes after it are kept). */
  private readConnectLine(a: PendingAccept): void {
    const buf = new Uint8Array(MAX_CONNECT_LINE + 1 - a.line.length);
    const n = recvSome(a.fd, buf);
    if (n < 0) return;
    if (n === 0) {
      this.dropAccept(a);
      return;
    }
    const line = new Uint8Array(a.line.length + n);
    line.set(a.line);
    line.set(buf.subarray(0, n), a.line.length);
    a.line = line;
    const nl = line.indexOf(0x0a);
    if (nl < 0) {
      if (line.length > MAX_CONNECT_LINE) this.dropAccept(a);
      return;
    }
    this.accepts.splice(this.accepts.indexOf(a), 1);
    const m = /^CONNECT (\d{1,10})$/.exec(new TextDecoder().decode(line.subarray(0, nl)));
    const port = m === null ? Number.NaN : Number(m[1]);
    if (!Number.isInteger(port) || port > 0xffffffff) {
      closeSocket(a.fd);
      return;
    }
    const c = this.newConnection(this.allocLocalPort(), port, "guest-connecting", a.fd);
    if (nl + 1 < line.length) c.early = line.slice(nl + 1);
    c.deadline = Date.now() + VSOCK_TIMEOUT_MS;
    this.options.metrics.hostConnections++;
    this.sendControl(this.packet(c, VsockOp.Request));
  }

  private allocLocalPort(): number {
    for (;;) {
      const port = this.nextLocalPort;
      this.nextLocalPort = this.nextLocalPort >= 0xfffffff0 ? FIRST_LOCAL_PORT : this.nextLocalPort + 1;
      if (![...this.conns.values()].some((c) => c.localPort === port)) return port;
    }
  }

  /** Writes waiting guest bytes to the host socket as far as it takes them. */
  private flushOut(c: Connection): void {
    try {
      while (c.out.length > 0) {
        const head = c.out[0]!;
        const n = sendSome(c.fd, head);
        if (n === 0) break;
        c.outBytes -= n;
        this.forwarded(c, n);
        if (n === head.length) c.out.shift();
        else c.out[0] = head.subarray(n);
      }
    } catch (err) {
      // The host closed its socket (EPIPE, ECONNRESET): the stream is over for the guest too.
      this.faults.report(`host socket of port ${c.localPort} failed: ${(err as Error).message}`);
      this.kill(c, c.state !== "closing");
      return;
    }
    if (c.outBytes === 0 && c.guestDone && c.fd >= 0) {
      if (c.state === "closing") {
        this.conns.delete(this.key(c.localPort, c.peerPort));
        closeSocket(c.fd);
        c.fd = -1;
      } else shutdownWrite(c.fd);
    }
  }

  private forwarded(c: Connection, n: number): void {
    c.fwdCnt = (c.fwdCnt + n) >>> 0;
    // Tell the guest about freed buffer space before it can run dry (§5.10.6.3).
    if (c.state === "established" && (c.fwdCnt - c.fwdCntSent) >>> 0 >= VSOCK_BUF_ALLOC / 4) {
      this.sendControl(this.packet(c, VsockOp.CreditUpdate));
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
    if (c === undefined || c.state === "closing") {
      if (c === undefined && p.op === VsockOp.Request) this.connectToHost(p);
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
        c.state = "established";
        c.deadline = undefined;
        // Firecracker's acknowledgement to the host program; the socket is fresh, it takes 16 bytes.
        try {
          sendSome(c.fd, new TextEncoder().encode(`OK ${c.localPort}\n`));
        } catch {
          this.kill(c, true);
          return;
        }
        c.readable = true; // data the host wrote after its CONNECT line may be waiting
        this.options.onRxReady();
        return;
      case VsockOp.Rw:
        if (c.state !== "established" || c.outBytes + p.payload.length > VSOCK_BUF_ALLOC) {
          // More than the credit we gave: the guest broke the protocol.
          this.kill(c, true);
          return;
        }
        this.options.metrics.txBytes += p.payload.length;
        c.out.push(p.payload);
        c.outBytes += p.payload.length;
        this.flushOut(c);
        return;
      case VsockOp.CreditUpdate:
        this.options.onRxReady();
        return;
      case VsockOp.CreditRequest:
        this.sendControl(this.packet(c, VsockOp.CreditUpdate));
        return;
      case VsockOp.Shutdown: {
        const both = VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV;
        if ((p.flags & VSOCK_SHUTDOWN_SEND) !== 0) c.guestDone = true;
        if ((p.flags & both) === both) {
          // The guest closed and waits for our RST (virtio_transport_close); its last bytes still
          // drain to the host socket for up to VSOCK_TIMEOUT_MS.
          c.state = "closing";
          c.deadline = Date.now() + VSOCK_TIMEOUT_MS;
          this.options.metrics.resets++;
          this.sendControl(this.packet(c, VsockOp.Rst));
        }
        this.flushOut(c);
        return;
      }
      case VsockOp.Rst:
        this.kill(c, false);
        return;
      default:
        this.kill(c, true);
    }
  }

  private connectToHost(p: VsockPacket): void {
    if (this.conns.size >= VSOCK_MAX_CONNECTIONS) {
      this.rstFor(p);
      return;
    }
    let fd: number;
    try {
      fd = connectUnix(`${this.options.udsPath}_${p.dstPort}`);
    } catch {
      this.rstFor(p);
      return;
    }
    const c = this.newConnection(p.dstPort, p.srcPort, "established", fd);
    c.peerBufAlloc = p.bufAlloc;
    c.peerFwdCnt = p.fwdCnt;
    this.options.metrics.guestConnections++;
    this.sendControl(this.packet(c, VsockOp.Response));
  }

  // ---- packets to the guest -------------------------------------------------------------------

  private credit(c: Connection): number {
    return Math.max(0, c.peerBufAlloc - ((c.rxCnt - c.peerFwdCnt) >>> 0));
  }

  private wantsRx(c: Connection): boolean {
    if (c.state !== "established") return false;
    if (c.hostEof) return !c.shutdownSent;
    return (c.readable || c.early !== undefined) && this.credit(c) > 0;
  }

  /** True if a packet may be waiting for an rx buffer. */
  hasRx(): boolean {
    if (this.control.length > 0) return true;
    for (const c of this.conns.values()) if (this.wantsRx(c)) return true;
    return false;
  }

  /** The next packet for the guest, its payload at most `maxPayload` bytes; undefined if none. */
  nextRx(maxPayload: number): VsockPacket | undefined {
    const ctl = this.control.shift();
    if (ctl !== undefined) return ctl;
    for (const c of [...this.conns.values()]) {
      if (!this.wantsRx(c)) continue;
      if (c.hostEof) {
        c.shutdownSent = true;
        return this.packet(c, VsockOp.Shutdown, VSOCK_SHUTDOWN_SEND);
      }
      const room = Math.min(this.credit(c), maxPayload, VSOCK_MAX_PKT_PAYLOAD);
      if (room === 0) continue;
      let payload: Uint8Array;
      if (c.early !== undefined) {
        payload = c.early.subarray(0, room);
        c.early = c.early.length > room ? c.early.subarray(room) : undefined;
      } else {
        let n: number;
        try {
          n = recvSome(c.fd, this.scratch.subarray(0, room));
        } catch {
          this.kill(c, true);
          continue;
        }
        if (n < 0) {
          c.readable = false;
          continue;
        }
        if (n === 0) {
          c.readable = false;
          c.hostEof = true;
          c.shutdownSent = true;
          return this.packet(c, VsockOp.Shutdown, VSOCK_SHUTDOWN_SEND);
        }
        payload = this.scratch.slice(0, n);
      }
      c.rxCnt = (c.rxCnt + payload.length) >>> 0;
      this.options.metrics.rxBytes += payload.length;
      // Round robin: the connection goes to the back of the map's order.
      this.conns.delete(this.key(c.localPort, c.peerPort));
      this.conns.set(this.key(c.localPort, c.peerPort), c);
      return this.packet(c, VsockOp.Rw, 0, payload);
    }
    return undefined;
  }

  /** The driver reset the device: every connection is gone (the guest forgot them). */
  reset(): void {
    for (const c of this.conns.values()) if (c.fd >= 0) closeSocket(c.fd);
    this.conns.clear();
    for (const a of this.accepts) closeSocket(a.fd);
    this.accepts.length = 0;
    this.control.length = 0;
  }

  /** Stops listening and removes the socket file. */
  close(): void {
    this.reset();
    if (this.listenFd >= 0) closeSocket(this.listenFd);
    this.listenFd = -1;
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
