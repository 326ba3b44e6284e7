/**
 * virtio-vsock (virtio 1.2 §5.10), as Linux 6.1's net/vmw_vsock/virtio_transport.c drives it:
 * queue 0 rx (host to guest packets, into buffers the guest posts), queue 1 tx (guest to host),
 * queue 2 event (TRANSPORT_RESET; never used here). The config space holds the guest's CID.
 * Connections live in the host backend (unix_backend.ts); this file moves packets between it and
 * the queues, bounding every header and payload the guest hands over. Host sockets are serviced
 * by `poll()`, which the machine's run loop calls (VirtioDevice.poll).
 */
import type { GuestMemory } from "../../../memory/guest_memory.js";
import { GuestFaultLog } from "../../guest_fault_log.js";
import { ChainReader, ChainWriter, type DescriptorChain, type Virtqueue } from "../queue.js";
import {
  type ActivateContext,
  readConfigBytes,
  VIRTIO_ID_VSOCK,
  type VirtioDevice,
  VirtioError,
  type VirtioInterrupt,
} from "../virtio_device.js";
import { createVsockMetrics } from "./metrics.js";
import { decodeHeader, encodeHeader, VSOCK_HDR_SIZE, VSOCK_MAX_PKT_PAYLOAD } from "./packet.js";
import { VsockUnixBackend } from "./unix_backend.js";

export const VSOCK_QUEUE_SIZE = 256;
const RX = 0;
const TX = 1;

export interface VsockOptions {
  /** The guest's context id (3 or more: 0-2 are reserved, 2 is the host). */
  cid: number | bigint;
  /** Host-side Unix socket path (Firecracker's uds_path). */
  udsPath: string;
}

export class VsockDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_VSOCK;
  readonly name: string;
  readonly queueMaxSizes = [VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE];
  readonly features = 0n;
  readonly maxChainBytes = VSOCK_HDR_SIZE + VSOCK_MAX_PKT_PAYLOAD + 4096;
  readonly metrics = createVsockMetrics();
  readonly backend: VsockUnixBackend;
  readonly cid: bigint;
  private readonly config = new Uint8Array(8);
  private readonly faults: GuestFaultLog;
  private queues: readonly Virtqueue[] = [];
  private interrupt: VirtioInterrupt | undefined;
  private active = false;
  /** An rx buffer popped and not filled (the backend had nothing after all): used first next time. */
  private spareRx: DescriptorChain | undefined;
  private inRx = false;
  private rxAgain = false;

  constructor(
    private readonly memory: GuestMemory,
    options: VsockOptions,
  ) {
    this.cid = BigInt(options.cid);
    if (this.cid < 3n || this.cid >= 0xffffffffn) {
      throw new VirtioError(
        "VSOCK_CID",
        `vsock guest CID ${this.cid} is invalid: use 3 or more (0-2 are reserved)`,
        {
          cid: options.cid,
        },
      );
    }
    this.name = `virtio-vsock(cid ${this.cid})`;
    this.faults = new GuestFaultLog(this.name);
    new DataView(this.config.buffer).setBigUint64(0, this.cid, true); // struct virtio_vsock_config.guest_cid
    this.backend = new VsockUnixBackend({
      guestCid: this.cid,
      udsPath: options.udsPath,
      metrics: this.metrics,
      onRxReady: () => this.processRx(),
    });
  }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    return readConfigBytes(this.config, offset, size);
  }

  writeConfig(): void {}

  activate(ctx: ActivateContext): void {
    this.queues = ctx.queues;
    this.interrupt = ctx.interrupt;
    this.active = true;
    this.processRx();
  }

  queueNotify(index: number): void {
    if (index === TX) this.processTx();
    else if (index === RX) this.processRx();
    // Event queue: the guest posts buffers we keep for a TRANSPORT_RESET we never send.
  }

  private processTx(): void {
    const q = this.queues[TX];
    if (q === undefined) return;
    for (let chain = q.pop(); chain !== undefined; chain = q.pop()) {
      const reader = new ChainReader(this.memory, chain.readable, chain.readableBytes);
      if (reader.remaining < VSOCK_HDR_SIZE) {
        this.bad(`tx packet of ${reader.remaining} bytes, shorter than a header`);
      } else {
        const { packet, len } = decodeHeader(reader.read(VSOCK_HDR_SIZE));
        if (len > VSOCK_MAX_PKT_PAYLOAD || len > reader.remaining) {
          this.bad(
            `tx packet claims ${len} payload bytes (${reader.remaining} present, ${VSOCK_MAX_PKT_PAYLOAD} at most)`,
          );
        } else {
          packet.payload = reader.read(len);
          this.metrics.txPackets++;
          this.backend.handleGuestPacket(packet);
        }
      }
      q.addUsed(chain.head, 0);
    }
    if (q.needsNotification()) this.interrupt?.signalUsedBuffer();
    this.processRx();
  }

  /**
   * Fills the guest's rx buffers with whatever the backend has for it. Re-entrant calls (the
   * backend queueing a packet while we ask it for one) only ask for another round; a buffer popped
   * when the backend then had nothing after all is kept for the next packet.
   */
  private processRx(): void {
    const q = this.queues[RX];
    if (!this.active || q === undefined) return;
    if (this.inRx) {
      this.rxAgain = true;
      return;
    }
    this.inRx = true;
    try {
      do {
        this.rxAgain = false;
        while (this.backend.hasRx()) {
          const chain = this.spareRx ?? q.pop();
          this.spareRx = undefined;
          if (chain === undefined) break;
          if (chain.writableBytes < VSOCK_HDR_SIZE) {
            this.bad(`rx buffer of ${chain.writableBytes} bytes, shorter than a header`);
            q.addUsed(chain.head, 0);
            continue;
          }
          const packet = this.backend.nextRx(chain.writableBytes - VSOCK_HDR_SIZE);
          if (packet === undefined) {
            this.spareRx = chain;
            break;
          }
          const writer = new ChainWriter(this.memory, chain.writable, chain.writableBytes);
          writer.write(encodeHeader(packet));
          writer.write(packet.payload);
          q.addUsed(chain.head, writer.written);
          this.metrics.rxPackets++;
        }
      } while (this.rxAgain);
    } finally {
      this.inRx = false;
    }
    if (q.needsNotification()) this.interrupt?.signalUsedBuffer();
  }

  poll(force = false): void {
    this.backend.poll(force);
  }

  waitFds(): { fd: number; events: number }[] {
    return this.backend.waitFds();
  }

  private bad(message: string): void {
    this.metrics.badPackets++;
    this.faults.report(message);
  }

  reset(): void {
    this.active = false;
    this.spareRx = undefined;
    this.queues = [];
    this.interrupt = undefined;
    this.backend.reset();
  }

  close(): void {
    this.backend.close();
  }
}
