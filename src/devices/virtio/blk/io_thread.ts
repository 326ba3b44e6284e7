/**
 * virtio-blk's I/O thread, machine side: the request queue is served by a worker thread
 * (io_worker.ts) so that disk I/O never runs on a vCPU's thread (on KVM the boot vCPU runs in the
 * machine worker itself). The two threads share guest memory and two small SharedArrayBuffers,
 * and never exchange messages (the worker blocks in Atomics.wait, which is the fastest wake-up):
 *
 *   ctl[DOORBELL]  bumped by the machine thread per QueueNotify and per command; the worker waits on it
 *   ctl[CMD]       the last command (CMD_START with `cfg` filled in, CMD_STOP, CMD_EXIT)
 *   ctl[CMD_SEQ]   bumped per command; ctl[ACK_SEQ] is the last one the worker carried out
 *   ctl[IRQ]       1 when the worker used buffers and the driver wants an interrupt
 *   ctl[BROKEN]    1 when the worker met a malformed chain or failed
 *   cfg            Float64Array: queue size, descriptor/avail/used addresses, features (lo, hi),
 *                  maxChainBytes
 *
 * The worker cannot raise the interrupt line itself (the soft engine's IOAPIC lives in the machine
 * thread): it sets ctl[IRQ] and writes an eventfd; the machine thread sees it in `poll()` (and a
 * waiter thread watching `eventFd` wakes a machine idle in KVM_RUN).
 */
import { Worker } from "node:worker_threads";
import type { RegionDescriptor } from "../../../memory/guest_memory.js";
import { close, EFD_CLOEXEC, EFD_NONBLOCK, eventfd, eventfdRead } from "../../../sys/libc.js";
import type { QueueConfig } from "../queue.js";
import { VirtioError } from "../virtio_device.js";
import { type BlkMetrics, createBlkMetrics } from "./metrics.js";

export const CTL_DOORBELL = 0;
export const CTL_CMD = 1;
export const CTL_CMD_SEQ = 2;
export const CTL_ACK_SEQ = 3;
export const CTL_IRQ = 4;
export const CTL_BROKEN = 5;
const CTL_WORDS = 6;
export const CMD_START = 1;
export const CMD_STOP = 2;
export const CMD_EXIT = 3;
/** cfg slots. */
export const CFG_SIZE = 0;
export const CFG_DESC = 1;
export const CFG_AVAIL = 2;
export const CFG_USED = 3;
export const CFG_FEATURES_LO = 4;
export const CFG_FEATURES_HI = 5;
export const CFG_MAX_CHAIN = 6;
const CFG_SLOTS = 7;
/** How long a reset waits for the request in flight to finish. */
const STOP_TIMEOUT_MS = 10_000;

/** Metric names in their order in the shared Float64Array. */
export const METRIC_KEYS = Object.keys(createBlkMetrics()) as (keyof BlkMetrics)[];

/** What the worker is given at creation (posted as workerData). */
export interface BlkIoWorkerData {
  regions: readonly RegionDescriptor[];
  path: string;
  readOnly: boolean;
  serial: Uint8Array;
  name: string;
  ctl: SharedArrayBuffer;
  cfg: SharedArrayBuffer;
  metrics: SharedArrayBuffer;
  eventFd: number;
}

export class BlkIoThread {
  private readonly worker: Worker;
  private readonly ctl: Int32Array;
  private readonly cfg: Float64Array;
  private readonly metricsView: Float64Array;
  /** eventfd the worker writes when ctl[IRQ] or ctl[BROKEN] changed. */
  readonly eventFd: number;
  private running = false;
  private closed = false;

  constructor(opts: {
    regions: readonly RegionDescriptor[];
    path: string;
    readOnly: boolean;
    serial: Uint8Array;
    name: string;
  }) {
    const ctl = new SharedArrayBuffer(4 * CTL_WORDS);
    const cfg = new SharedArrayBuffer(8 * CFG_SLOTS);
    const metrics = new SharedArrayBuffer(8 * METRIC_KEYS.length);
    this.ctl = new Int32Array(ctl);
    this.cfg = new Float64Array(cfg);
    this.metricsView = new Float64Array(metrics);
    this.eventFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const workerData: BlkIoWorkerData = { ...opts, ctl, cfg, metrics, eventFd: this.eventFd };
    this.worker = new Worker(new URL("./io_worker.js", import.meta.url), { workerData });
    // The worker must not keep a finished machine alive, nor die silently.
    this.worker.unref();
    this.worker.on("error", () => Atomics.store(this.ctl, CTL_BROKEN, 1));
  }

  private command(cmd: number): number {
    Atomics.store(this.ctl, CTL_CMD, cmd);
    const seq = Atomics.add(this.ctl, CTL_CMD_SEQ, 1) + 1;
    this.notify();
    return seq;
  }

  /** Starts serving a queue (the driver set DRIVER_OK). */
  start(queue: QueueConfig, features: bigint, maxChainBytes: number): void {
    Atomics.store(this.ctl, CTL_BROKEN, 0);
    Atomics.store(this.ctl, CTL_IRQ, 0);
    this.cfg[CFG_SIZE] = queue.size;
    this.cfg[CFG_DESC] = queue.descTable;
    this.cfg[CFG_AVAIL] = queue.availRing;
    this.cfg[CFG_USED] = queue.usedRing;
    this.cfg[CFG_FEATURES_LO] = Number(features & 0xffffffffn);
    this.cfg[CFG_FEATURES_HI] = Number(features >> 32n);
    this.cfg[CFG_MAX_CHAIN] = maxChainBytes;
    this.running = true;
    this.command(CMD_START);
  }

  /** A QueueNotify: wakes the worker. */
  notify(): void {
    Atomics.add(this.ctl, CTL_DOORBELL, 1);
    Atomics.notify(this.ctl, CTL_DOORBELL);
  }

  /**
   * Stops serving (device reset): returns once the worker finished the request in flight and will
   * not touch guest memory again, so the driver may reuse it.
   */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    const seq = this.command(CMD_STOP);
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    for (;;) {
      const ack = Atomics.load(this.ctl, CTL_ACK_SEQ);
      if (ack >= seq) return;
      if (Date.now() > deadline) {
        throw new VirtioError(
          "BLK_IO_STUCK",
          "the virtio-blk I/O thread did not stop within 10 s (host disk hung?)",
        );
      }
      Atomics.wait(this.ctl, CTL_ACK_SEQ, ack, 50);
    }
  }

  /** Whether the worker asked for a used-buffer interrupt since the last call (and clears the eventfd). */
  takeInterrupt(): boolean {
    const irq = Atomics.exchange(this.ctl, CTL_IRQ, 0) === 1;
    if (irq || Atomics.load(this.ctl, CTL_BROKEN) === 1) this.drainEventFd();
    return irq;
  }

  get broken(): boolean {
    return Atomics.load(this.ctl, CTL_BROKEN) === 1;
  }

  private drainEventFd(): void {
    try {
      eventfdRead(this.eventFd);
    } catch {
      // EAGAIN: already drained
    }
  }

  metrics(): BlkMetrics {
    const m = createBlkMetrics();
    METRIC_KEYS.forEach((k, i) => {
      m[k] = this.metricsView[i]!;
    });
    return m;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.stop();
    } finally {
      this.command(CMD_EXIT);
      void this.worker.terminate();
      close(this.eventFd);
    }
  }
}
