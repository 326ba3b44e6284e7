/**
 * virtio-blk (virtio 1.2 §5.2), one request queue over a raw image file, as Linux 6.1's
 * drivers/block/virtio_blk.c drives it. Requests are served by BlkRequestHandler (requests.ts):
 *
 * - with `ioThread` (what the factory uses), in a worker thread of its own (io_thread.ts): a
 *   QueueNotify only rings a doorbell, so disk I/O never runs on a vCPU's thread; completions
 *   reach the guest's interrupt line through `poll()` (the run loop's hook) and `waitFds()`.
 * - without, synchronously in the machine worker at the QueueNotify (unit tests; the software
 *   engine, whose CPU shares that thread anyway).
 *
 * FLUSH is fsync on the image, so data the guest flushed survives a crash of Vessel; if the driver
 * did not accept VIRTIO_BLK_F_FLUSH the device is write-through (fsync after every write), as
 * §5.2.6.3 asks.
 */
import type { GuestMemory } from "../../../memory/guest_memory.js";
import { GuestFaultLog } from "../../guest_fault_log.js";
import type { Virtqueue } from "../queue.js";
import {
  type ActivateContext,
  readConfigBytes,
  VIRTIO_ID_BLOCK,
  type VirtioDevice,
  VirtioError,
  type VirtioInterrupt,
} from "../virtio_device.js";
import { DiskFile } from "./disk_file.js";
import { BlkIoThread } from "./io_thread.js";
import { type BlkMetrics, createBlkMetrics } from "./metrics.js";
import {
  BLK_MAX_DWZ_SECTORS,
  BLK_MAX_DWZ_SEGMENTS,
  BLK_MAX_REQUEST_BYTES,
  BLK_QUEUE_SIZE,
  BLK_SEG_MAX,
  BLK_SIZE_MAX,
  BlkRequestHandler,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_ID_BYTES,
} from "./requests.js";

export * from "./requests.js";

export interface BlkOptions {
  path: string;
  readOnly?: boolean;
  /** GET_ID answer (at most 20 bytes); default "vessel-" and the image's base name. */
  serial?: string;
  /** Serve requests in a worker thread of their own (off the vCPU's path); default false. */
  ioThread?: boolean;
}

export class BlkDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly name: string;
  readonly queueMaxSizes = [BLK_QUEUE_SIZE];
  readonly maxChainBytes = BLK_MAX_REQUEST_BYTES;
  readonly features: bigint;
  readonly disk: DiskFile;
  private readonly config = new Uint8Array(60);
  private readonly handler: BlkRequestHandler;
  private readonly thread: BlkIoThread | undefined;
  private queue: Virtqueue | undefined;
  private interrupt: VirtioInterrupt | undefined;

  constructor(memory: GuestMemory, options: BlkOptions) {
    const readOnly = options.readOnly ?? false;
    this.disk = DiskFile.open(options.path, readOnly);
    this.name = `virtio-blk(${options.path})`;
    const base = options.path.split("/").pop() ?? "disk";
    const serial = new TextEncoder()
      .encode(options.serial ?? `vessel-${base}`)
      .subarray(0, VIRTIO_BLK_ID_BYTES);
    this.handler = new BlkRequestHandler(
      memory,
      this.disk,
      serial,
      createBlkMetrics(),
      new GuestFaultLog(this.name),
    );
    if (options.ioThread === true) {
      this.thread = new BlkIoThread({
        regions: memory.descriptors,
        path: options.path,
        readOnly,
        serial,
        name: this.name,
      });
    }
    this.features =
      VIRTIO_BLK_F_SIZE_MAX |
      VIRTIO_BLK_F_SEG_MAX |
      VIRTIO_BLK_F_FLUSH |
      VIRTIO_BLK_F_DISCARD |
      VIRTIO_BLK_F_WRITE_ZEROES |
      (readOnly ? VIRTIO_BLK_F_RO : 0n);
    // struct virtio_blk_config (packed, little-endian).
    const c = new DataView(this.config.buffer);
    c.setBigUint64(0, BigInt(this.disk.sectors), true); // capacity
    c.setUint32(8, BLK_SIZE_MAX, true); // size_max
    c.setUint32(12, BLK_SEG_MAX, true); // seg_max
    c.setUint32(36, BLK_MAX_DWZ_SECTORS, true); // max_discard_sectors
    c.setUint32(40, BLK_MAX_DWZ_SEGMENTS, true); // max_discard_seg
    c.setUint32(44, 8, true); // discard_sector_alignment: 4 KiB, the host's block size
    c.setUint32(48, BLK_MAX_DWZ_SECTORS, true); // max_write_zeroes_sectors
    c.setUint32(52, BLK_MAX_DWZ_SEGMENTS, true); // max_write_zeroes_seg
    c.setUint8(56, 1); // write_zeroes_may_unmap
  }

  /** Counters: this thread's, or the I/O thread's as it last published them. */
  get metrics(): BlkMetrics {
    return this.thread?.metrics() ?? this.handler.metrics;
  }

  /** True if requests are served by a worker thread. */
  get threaded(): boolean {
    return this.thread !== undefined;
  }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    return readConfigBytes(this.config, offset, size);
  }

  writeConfig(): void {
    // Only `wce` is writable, with VIRTIO_BLK_F_CONFIG_WCE, which we do not offer.
  }

  activate(ctx: ActivateContext): void {
    const q = ctx.queues[0];
    this.queue = q;
    this.interrupt = ctx.interrupt;
    this.handler.acked = ctx.features;
    // A queue broken by its layout already set DEVICE_NEEDS_RESET; the thread is not started.
    if (this.thread !== undefined && q?.usable === true) {
      this.thread.start(q.config, ctx.features, this.maxChainBytes);
    }
  }

  queueNotify(): void {
    if (this.thread !== undefined) {
      this.thread.notify();
      return;
    }
    const q = this.queue;
    if (q !== undefined && this.handler.serve(q)) this.interrupt?.signalUsedBuffer();
  }

  /** Threaded mode: forwards the I/O thread's interrupt requests and failures. */
  poll(): void {
    const t = this.thread;
    if (t === undefined) return;
    if (t.takeInterrupt()) this.interrupt?.signalUsedBuffer();
    if (t.broken)
      throw new VirtioError("BLK_IO_THREAD", `${this.name}: malformed request queue or I/O thread failure`);
  }

  waitFds(): { fd: number; events: number }[] {
    return this.thread === undefined ? [] : [{ fd: this.thread.eventFd, events: 1 /* POLLIN */ }];
  }

  reset(): void {
    this.thread?.stop();
    this.queue = undefined;
    this.interrupt = undefined;
    this.handler.acked = 0n;
  }

  close(): void {
    this.thread?.close();
    this.disk.close();
  }
}
