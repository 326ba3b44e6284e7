/**
 * virtio-blk's I/O thread, worker side (see io_thread.ts for the shared words): serves the
 * request queue with the same BlkRequestHandler the device uses in the machine thread, blocked in
 * Atomics.wait on the doorbell between rounds.
 */
import { workerData } from "node:worker_threads";
import { GuestMemory } from "../../../memory/guest_memory.js";
import { eventfdSignal } from "../../../sys/libc.js";
import { viewHostMemory } from "../../../sys/mman.js";
import { GuestFaultLog } from "../../guest_fault_log.js";
import { Virtqueue } from "../queue.js";
import { VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from "../virtio_device.js";
import { DiskFile } from "./disk_file.js";
import {
  type BlkIoWorkerData,
  CFG_AVAIL,
  CFG_DESC,
  CFG_FEATURES_HI,
  CFG_FEATURES_LO,
  CFG_MAX_CHAIN,
  CFG_SIZE,
  CFG_USED,
  CMD_EXIT,
  CMD_START,
  CTL_ACK_SEQ,
  CTL_BROKEN,
  CTL_CMD,
  CTL_CMD_SEQ,
  CTL_DOORBELL,
  CTL_IRQ,
  METRIC_KEYS,
} from "./io_thread.js";
import { createBlkMetrics } from "./metrics.js";
import { BlkRequestHandler } from "./requests.js";

const data = workerData as BlkIoWorkerData;
const ctl = new Int32Array(data.ctl);
const cfg = new Float64Array(data.cfg);
const metricsView = new Float64Array(data.metrics);
const memory = new GuestMemory(data.regions, viewHostMemory);
const disk = DiskFile.open(data.path, data.readOnly);
const faults = new GuestFaultLog(`${data.name} I/O thread`);
const handler = new BlkRequestHandler(memory, disk, data.serial, createBlkMetrics(), faults);
let queue: Virtqueue | undefined;

function wake(): void {
  eventfdSignal(data.eventFd);
}

function fail(message: string): void {
  faults.report(message);
  Atomics.store(ctl, CTL_BROKEN, 1);
  queue = undefined;
  wake();
}

function serve(): void {
  if (queue === undefined) return;
  try {
    if (handler.serve(queue)) {
      Atomics.store(ctl, CTL_IRQ, 1);
      wake();
    }
  } catch (err) {
    fail(`request failed: ${(err as Error).message}`);
  }
  METRIC_KEYS.forEach((k, i) => {
    metricsView[i] = handler.metrics[k];
  });
}

/** Carries out the last command; returns false for CMD_EXIT. */
function command(): boolean {
  const cmd = Atomics.load(ctl, CTL_CMD);
  queue = undefined;
  if (cmd === CMD_START) {
    const features = BigInt(cfg[CFG_FEATURES_LO]!) | (BigInt(cfg[CFG_FEATURES_HI]!) << 32n);
    handler.acked = features;
    const config = {
      size: cfg[CFG_SIZE]!,
      ready: true,
      descTable: cfg[CFG_DESC]!,
      availRing: cfg[CFG_AVAIL]!,
      usedRing: cfg[CFG_USED]!,
    };
    queue = new Virtqueue(memory, 0, config, {
      indirect: (features & VIRTIO_RING_F_INDIRECT_DESC) !== 0n,
      eventIdx: (features & VIRTIO_RING_F_EVENT_IDX) !== 0n,
      maxChainBytes: cfg[CFG_MAX_CHAIN]!,
      onBroken: (err) => fail(err.message),
    });
  }
  return cmd !== CMD_EXIT;
}

let acked = 0;
for (;;) {
  const seen = Atomics.load(ctl, CTL_DOORBELL);
  const seq = Atomics.load(ctl, CTL_CMD_SEQ);
  if (seq !== acked) {
    const go = command();
    acked = seq;
    Atomics.store(ctl, CTL_ACK_SEQ, seq);
    Atomics.notify(ctl, CTL_ACK_SEQ);
    if (!go) break;
  }
  serve();
  Atomics.wait(ctl, CTL_DOORBELL, seen);
}
disk.close();
