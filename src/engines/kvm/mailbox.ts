import type { AccessSize } from "../../bus/device.js";
import type { IoHandler } from "./run_loop.js";
import type { VcpuLink } from "./vcpu_link.js";

/**
 * An I/O mailbox between a secondary vCPU thread and the machine thread that owns the devices
 * (brief: "secondary vCPUs forward I/O exits through a SharedArrayBuffer mailbox"). One request at
 * a time per vCPU; Int32 words:
 *   [0] state: IDLE, REQUEST (vCPU posted), RESPONSE (machine answered)
 *   [1] op: PIO_IN, PIO_OUT, MMIO_READ, MMIO_WRITE     [2] address low 32 bits  [3] high 32 bits
 *   [4] size (1, 2, 4)                                   [5] value (write data, or read result)
 * The vCPU posts, kicks the machine thread (which may be inside its own KVM_RUN), and waits with
 * Atomics.wait; the machine thread serves every posted box between its own exits.
 */
const IDLE = 0;
const REQUEST = 1;
const RESPONSE = 2;
const PIO_IN = 0;
const PIO_OUT = 1;
const MMIO_READ = 2;
const MMIO_WRITE = 3;

export function newMailbox(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(32));
}

/**
 * Port 0x80, the POST diagnostic port that Linux's io_delay writes to between slow port accesses:
 * a stateless sink, answered in the vCPU thread without a round trip (reads: all ones).
 */
export const POST_PORT = 0x80;

/**
 * The vCPU side: an IoHandler that forwards every access to the machine thread, except stateless
 * ones (POST_PORT), answered inline. `inline` counts those.
 */
export class MailboxClient implements IoHandler {
  private readonly box: Int32Array;
  private readonly owner: VcpuLink;
  private readonly self: VcpuLink;

  /**
   * @param owner the link of the machine thread (kicked to make it serve the box)
   * @param self this vCPU's link: a stop request ends the wait (the machine may be gone)
   */
  constructor(box: Int32Array, owner: VcpuLink, self: VcpuLink) {
    this.box = box;
    this.owner = owner;
    this.self = self;
  }

  inline = 0;

  private call(op: number, addr: number, size: AccessSize, value: number): number {
    const b = this.box;
    b[1] = op;
    b[2] = addr >>> 0;
    b[3] = Math.floor(addr / 0x1_0000_0000);
    b[4] = size;
    b[5] = value;
    Atomics.store(b, 0, REQUEST);
    Atomics.notify(b, 0);
    this.owner.kick();
    while (Atomics.load(b, 0) !== RESPONSE) {
      if (Atomics.load(this.self.control, 0) !== 0) break; // stopping: the answer may never come
      if (Atomics.wait(b, 0, REQUEST, 20) === "timed-out") this.owner.kick();
    }
    const result = b[5]! >>> 0;
    Atomics.store(b, 0, IDLE);
    return result;
  }

  pioIn(port: number, size: AccessSize): number {
    if (port === POST_PORT) {
      this.inline++;
      return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
    }
    return this.call(PIO_IN, port, size, 0);
  }
  pioOut(port: number, size: AccessSize, value: number): void {
    if (port === POST_PORT) {
      this.inline++;
      return;
    }
    this.call(PIO_OUT, port, size, value);
  }
  mmioRead(addr: number, size: AccessSize): number {
    return this.call(MMIO_READ, addr, size, 0);
  }
  mmioWrite(addr: number, size: AccessSize, value: number): void {
    this.call(MMIO_WRITE, addr, size, value);
  }
}

/** The machine side: answers every posted request on `boxes` through `io`. Returns how many. */
export function serveMailboxes(boxes: readonly Int32Array[], io: IoHandler): number {
  let served = 0;
  for (const b of boxes) {
    if (Atomics.load(b, 0) !== REQUEST) continue;
    // The words are signed: an MMIO address at or above 2 GiB (virtio-mmio at 0xd0000000) has its
    // low word negative, so both halves are read back unsigned.
    const addr = (b[2]! >>> 0) + (b[3]! >>> 0) * 0x1_0000_0000;
    const size = b[4] as AccessSize;
    switch (b[1]) {
      case PIO_IN:
        b[5] = io.pioIn(addr, size);
        break;
      case PIO_OUT:
        io.pioOut(addr, size, b[5]! >>> 0);
        break;
      case MMIO_READ:
        b[5] = io.mmioRead(addr, size);
        break;
      case MMIO_WRITE:
        io.mmioWrite(addr, size, b[5]! >>> 0);
        break;
      default:
        break;
    }
    Atomics.store(b, 0, RESPONSE);
    Atomics.notify(b, 0);
    served++;
  }
  return served;
}
