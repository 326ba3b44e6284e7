/**
 * virtio-blk's I/O thread, worker side (see io_thread.ts): serves the request queue with the same
 * BlkRequestHandler the device uses in the machine thread, waiting on the doorbell with
 * Atomics.waitAsync so that start/stop messages still arrive.
 */
import { parentPort, workerData } from "node:worker_threads";
import { GuestMemory } from "../../../memory/guest_memory.js";
import { eventfdSignal } from "../../../sys/libc.js";
import { viewHostMemory } from "../../../sys/mman.js";
import { GuestFaultLog } from "../../guest_fault_log.js";
import { Virtqueue } from "../queue.js";
import { VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from "../virtio_device.js";
import { DiskFile } from "./disk_file.js";
import {
  type BlkIoMessage,
  type BlkIoWorkerData,
  CTL_BROKEN,
  CTL_DOORBELL,
  CTL_IRQ,
  CTL_STATE,
  METRIC_KEYS,
} from "./io_thread.js";
import { createBlkMetrics } from "./metrics.js";
import { BlkRequestHandler } from "./requests.js";

const data = workerData as BlkIoWorkerData;
const ctl = new Int32Array(data.ctl);
const metricsView = new Float64Array(data.metrics);
const memory = new GuestMemory(data.regions, viewHostMemory);
const disk = DiskFile.open(data.path, data.readOnly);
const faults = new GuestFaultLog(`${data.name} I/O thread`);
const handler = new BlkRequestHandler(memory, disk, data.serial, createBlkMetrics(), faults);
let queue: Virtqueue | undefined;

function wake(): void {
  eventfdSignal(data.eventFd);
}

function serve(): void {
  if (queue === undefined) return;
  try {
    if (handler.serve(queue)) {
      Atomics.store(ctl, CTL_IRQ, 1);
      wake();
    }
  } catch (err) {
    faults.report(`request failed: ${(err as Error).message}`);
    Atomics.store(ctl, CTL_BROKEN, 1);
    queue = undefined;
    wake();
  }
  METRIC_KEYS.forEach((k, i) => {
    metricsView[i] = handler.metrics[k];
  });
}

parentPort!.on("message", (msg: BlkIoMessage) => {
  if (msg.type === "start") {
    handler.acked = msg.features;
    queue = new Virtqueue(memory, 0, msg.queue, {
      indirect: (msg.features & VIRTIO_RING_F_INDIRECT_DESC) !== 0n,
      eventIdx: (msg.features & VIRTIO_RING_F_EVENT_IDX) !== 0n,
      maxChainBytes: msg.maxChainBytes,
      onBroken: (err) => {
        faults.report(err.message);
        Atomics.store(ctl, CTL_BROKEN, 1);
        wake();
      },
    });
    Atomics.store(ctl, CTL_STATE, 1);
    serve(); // requests made available before the thread started
  } else {
    queue = undefined;
    Atomics.store(ctl, CTL_STATE, 0);
    Atomics.notify(ctl, CTL_STATE);
  }
});

/** Atomics.waitAsync (Node 16+; not in TypeScript's ES2022 lib). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      index: number,
      value: number,
    ): { async: boolean; value: Promise<string> | string };
  }
).waitAsync;

async function loop(): Promise<void> {
  for (;;) {
    const seen = Atomics.load(ctl, CTL_DOORBELL);
    serve();
    const w = waitAsync(ctl, CTL_DOORBELL, seen);
    if (w.async) await w.value;
  }
}
void loop();
