/**
 * virtio-net (virtio 1.2 §5.1) over a host TAP device, one queue pair, as Linux 6.1's
 * drivers/net/virtio_net.c drives it: queue 0 receiveq, queue 1 transmitq. Every frame carries a
 * 12-byte struct virtio_net_hdr_v1 (§5.1.6: flags, gso_type, hdr_len, gso_size, csum_start,
 * csum_offset, num_buffers), which is exactly what a TAP with IFF_VNET_HDR and
 * TUNSETVNETHDRSZ 12 reads and writes; so checksum and segmentation offloads cost nothing here:
 * the host kernel does the work the guest left (partial checksums, TSO) and hands us GSO frames
 * when the guest accepted them (TUNSETOFFLOAD).
 *
 * No MRG_RXBUF: a received frame goes into one chain (Linux then posts "big" buffers of
 * ~64 KiB when it accepted GUEST_TSO, MTU-sized ones otherwise). A frame that does not fit the
 * chain is dropped and counted.
 *
 * Receive: frames are read (non-blocking) while the guest has buffers; when it has none, one frame
 * waits and the TAP is not read until the guest posts buffers (Firecracker's deferred frame). The
 * reading happens in `poll()`, which the machine's run loop calls (the machine worker's event loop
 * does not turn while the guest runs), and also from an off-thread poll(2) whose completion
 * arrives through the event loop when it does turn.
 */
import { randomFillSync } from "node:crypto";
import type { GuestMemory } from "../../../memory/guest_memory.js";
import { type Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 } from "../../../sys/tap.js";
import { GuestFaultLog } from "../../guest_fault_log.js";
import { ChainReader, ChainWriter, type Virtqueue } from "../queue.js";
import {
  type ActivateContext,
  readConfigBytes,
  VIRTIO_ID_NET,
  type VirtioDevice,
  VirtioError,
  type VirtioInterrupt,
} from "../virtio_device.js";
import { createNetMetrics } from "./metrics.js";

/** Feature bits (include/uapi/linux/virtio_net.h). */
export const VIRTIO_NET_F_CSUM = 1n << 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n << 1n;
export const VIRTIO_NET_F_MAC = 1n << 5n;
export const VIRTIO_NET_F_GUEST_TSO4 = 1n << 7n;
export const VIRTIO_NET_F_GUEST_TSO6 = 1n << 8n;
export const VIRTIO_NET_F_HOST_TSO4 = 1n << 11n;
export const VIRTIO_NET_F_HOST_TSO6 = 1n << 12n;

/** sizeof(struct virtio_net_hdr_v1). */
export const VIRTIO_NET_HDR_SIZE = 12;
/** Largest frame (a 64 KiB GSO frame plus Ethernet and VLAN headers) and the header in front of it. */
export const NET_MAX_FRAME = 65535 + 14 + 4;
export const NET_MAX_PACKET = VIRTIO_NET_HDR_SIZE + NET_MAX_FRAME;
export const NET_QUEUE_SIZE = 256;
/** How long one off-thread poll of the TAP waits before looking at the device state again. */
const POLL_TIMEOUT_MS = 200;
/** Unforced `poll()` calls closer together than this are skipped. */
const POLL_INTERVAL_MS = 0.5;
const RX = 0;
const TX = 1;

export interface NetOptions {
  /** The opened TAP (the factory opens it: sys/tap.ts). */
  tap: Tap;
  /** Guest MAC address, "52:54:00:12:34:56"; default: a random locally administered address. */
  mac?: string;
}

export class NetDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_NET;
  readonly name: string;
  readonly queueMaxSizes = [NET_QUEUE_SIZE, NET_QUEUE_SIZE];
  readonly features =
    VIRTIO_NET_F_CSUM |
    VIRTIO_NET_F_GUEST_CSUM |
    VIRTIO_NET_F_MAC |
    VIRTIO_NET_F_GUEST_TSO4 |
    VIRTIO_NET_F_GUEST_TSO6 |
    VIRTIO_NET_F_HOST_TSO4 |
    VIRTIO_NET_F_HOST_TSO6;
  readonly maxChainBytes = 4 * NET_MAX_PACKET;
  readonly metrics = createNetMetrics();
  readonly mac: Uint8Array;
  readonly tap: Tap;
  /** struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu (only mac is offered). */
  private readonly config = new Uint8Array(12);
  private readonly faults: GuestFaultLog;
  private queues: readonly Virtqueue[] = [];
  private interrupt: VirtioInterrupt | undefined;
  private active = false;
  private readonly rxBuf = new Uint8Array(NET_MAX_PACKET);
  /** A frame read from the TAP that waits for a guest buffer (length in rxBuf), or 0. */
  private deferredLen = 0;
  private polling = false;
  private lastPoll = -Infinity;

  constructor(
    private readonly memory: GuestMemory,
    options: NetOptions,
  ) {
    this.tap = options.tap;
    this.name = `virtio-net(${this.tap.name})`;
    this.faults = new GuestFaultLog(this.name);
    this.mac = options.mac === undefined ? randomMac() : parseMac(options.mac);
    this.config.set(this.mac, 0);
  }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    return readConfigBytes(this.config, offset, size);
  }

  writeConfig(): void {
    // The MAC is writable only in legacy devices; ignored.
  }

  activate(ctx: ActivateContext): void {
    this.queues = ctx.queues;
    this.interrupt = ctx.interrupt;
    const f = ctx.features;
    let offload = 0;
    if ((f & VIRTIO_NET_F_GUEST_CSUM) !== 0n) {
      offload |= TUN_F_CSUM;
      if ((f & VIRTIO_NET_F_GUEST_TSO4) !== 0n) offload |= TUN_F_TSO4;
      if ((f & VIRTIO_NET_F_GUEST_TSO6) !== 0n) offload |= TUN_F_TSO6;
    }
    this.tap.setOffload(offload);
    this.active = true;
    this.pumpRx();
  }

  queueNotify(index: number): void {
    if (index === TX) this.processTx();
    else if (index === RX) this.pumpRx();
  }

  private processTx(): void {
    const q = this.queues[TX];
    if (q === undefined) return;
    for (let chain = q.pop(); chain !== undefined; chain = q.pop()) {
      if (chain.readableBytes < VIRTIO_NET_HDR_SIZE || chain.readableBytes > NET_MAX_PACKET) {
        this.metrics.txDropped++;
        this.faults.report(`tx packet of ${chain.readableBytes} bytes dropped`);
      } else {
        const packet = new ChainReader(this.memory, chain.readable, chain.readableBytes).read(
          chain.readableBytes,
        );
        try {
          if (this.tap.write(packet)) {
            this.metrics.txPackets++;
            this.metrics.txBytes += packet.length - VIRTIO_NET_HDR_SIZE;
          } else this.metrics.txDropped++;
        } catch (err) {
          this.metrics.txDropped++;
          this.faults.report(`TAP write failed: ${(err as Error).message}`);
        }
      }
      q.addUsed(chain.head, 0);
    }
    if (q.needsNotification()) this.interrupt?.signalUsedBuffer();
  }

  /** Moves frames from the TAP into guest buffers until one side runs dry, then waits for the TAP. */
  private pumpRx(): void {
    const q = this.queues[RX];
    if (!this.active || q === undefined) return;
    let used = false;
    for (;;) {
      if (this.deferredLen === 0) {
        try {
          this.deferredLen = this.tap.read(this.rxBuf);
        } catch (err) {
          this.faults.report(`TAP read failed: ${(err as Error).message}`);
          this.deferredLen = 0;
        }
        if (this.deferredLen === 0) break; // TAP empty: poll it
      }
      const chain = q.pop();
      if (chain === undefined) break; // guest has no buffers: wait for its rx notify
      const len = this.deferredLen;
      this.deferredLen = 0;
      if (len > chain.writableBytes) {
        this.metrics.rxDropped++;
        this.faults.report(`rx frame of ${len} bytes does not fit a guest buffer of ${chain.writableBytes}`);
        q.addUsed(chain.head, 0);
      } else {
        // num_buffers, the header's last field, is 1 without MRG_RXBUF (§5.1.6.4); the TAP
        // skips the bytes of the header past its own 10-byte virtio_net_hdr.
        this.rxBuf[10] = 1;
        this.rxBuf[11] = 0;
        new ChainWriter(this.memory, chain.writable, chain.writableBytes).write(this.rxBuf.subarray(0, len));
        q.addUsed(chain.head, len);
        this.metrics.rxPackets++;
        this.metrics.rxBytes += len - VIRTIO_NET_HDR_SIZE;
      }
      used = true;
    }
    if (used && q.needsNotification()) this.interrupt?.signalUsedBuffer();
    if (this.deferredLen === 0) this.pollTap();
  }

  /** Services the TAP without blocking (the run loop's path; see VirtioDevice.poll). */
  poll(force = false): void {
    // A non-blocking read(2) of an empty TAP costs ~1 us through FFI: unforced calls from a run
    // loop that polls after every exit are throttled like vsock's.
    const t = performance.now();
    if (!force && t - this.lastPoll < POLL_INTERVAL_MS) return;
    this.lastPoll = t;
    if (this.active) this.pumpRx();
  }

  waitFds(): { fd: number; events: number }[] {
    // While a frame waits for a guest buffer the TAP is not read: nothing to wait for.
    return this.active && this.deferredLen === 0 ? [{ fd: this.tap.fd, events: 1 /* POLLIN */ }] : [];
  }

  /**
   * Off-thread poll of the TAP, for when the machine worker's event loop turns (tests, a paused
   * guest); the run loop's `poll()` does the same work synchronously.
   */
  private pollTap(): void {
    if (this.polling || !this.active) return;
    this.polling = true;
    void this.tap.waitReadable(POLL_TIMEOUT_MS).then((readable) => {
      this.polling = false;
      if (!this.active) return;
      if (readable) this.pumpRx();
      else this.pollTap();
    });
  }

  reset(): void {
    this.active = false;
    this.queues = [];
    this.interrupt = undefined;
    this.deferredLen = 0;
  }

  close(): void {
    this.active = false;
    this.tap.close();
  }
}

function parseMac(text: string): Uint8Array {
  const parts = text.split(":");
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) {
    throw new VirtioError(
      "NET_MAC",
      `MAC address ${JSON.stringify(text)} is not six hex bytes like 52:54:00:12:34:56`,
      {
        mac: text,
      },
    );
  }
  return Uint8Array.from(parts.map((p) => Number.parseInt(p, 16)));
}

/** A random unicast, locally administered MAC (first byte xxxxxx10). */
function randomMac(): Uint8Array {
  const mac = new Uint8Array(6);
  randomFillSync(mac);
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  return mac;
}
