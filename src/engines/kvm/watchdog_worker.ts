/**
 * A watchdog thread: if not cancelled within `ms`, it stops a vCPU (sets its stop word and kicks
 * its thread). A thread blocked in KVM_RUN runs no timers, so a time limit needs another thread.
 * Cancelled by storing 1 in `cancel` and notifying; the thread then ends by itself.
 * workerData: { link: SharedArrayBuffer (vcpu_link.ts), cancel: SharedArrayBuffer (Int32 [0]), ms }.
 */
import { parentPort, workerData } from "node:worker_threads";
import { VcpuLink } from "./vcpu_link.js";

const { link, cancel, ms } = workerData as { link: SharedArrayBuffer; cancel: SharedArrayBuffer; ms: number };
const word = new Int32Array(cancel);
// Tell the machine thread we are armed (modules, koffi included, are loaded): a worker must not
// be terminated while a native addon initializes, so the machine cancels us through `cancel`.
parentPort?.postMessage("armed");
if (Atomics.wait(word, 0, 0, ms) === "timed-out") {
  Atomics.store(word, 0, 2); // 2 = fired
  new VcpuLink(link).stop();
}
