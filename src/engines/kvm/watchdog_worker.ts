/**
 * A watchdog thread for one vCPU: while armed, if not disarmed within the armed time, it stops the
 * vCPU (sets its stop word and kicks its thread). A thread blocked in KVM_RUN runs no timers, so a
 * time limit needs another thread. One watchdog serves any number of runs (watchdog.ts arms it).
 * workerData: { link: SharedArrayBuffer (vcpu_link.ts), state: SharedArrayBuffer (watchdog.ts) }.
 */
import { parentPort, workerData } from "node:worker_threads";
import { VcpuLink } from "./vcpu_link.js";
import {
  WATCHDOG_ARMED,
  WATCHDOG_FIRED,
  WATCHDOG_IDLE,
  WATCHDOG_MS,
  WATCHDOG_QUIT,
  WATCHDOG_STATE,
} from "./watchdog.js";

const { link, state } = workerData as { link: SharedArrayBuffer; state: SharedArrayBuffer };
const word = new Int32Array(state);
const vcpu = new VcpuLink(link);
// Modules (koffi included) are loaded: the owner may rely on us from now on. A worker must not be
// terminated while a native addon initializes, so the owner ends us with WATCHDOG_QUIT instead.
parentPort?.postMessage("armed");
for (;;) {
  Atomics.wait(word, WATCHDOG_STATE, WATCHDOG_IDLE);
  const s = Atomics.load(word, WATCHDOG_STATE);
  if (s === WATCHDOG_QUIT) break;
  if (s !== WATCHDOG_ARMED) continue;
  const r = Atomics.wait(word, WATCHDOG_STATE, WATCHDOG_ARMED, Atomics.load(word, WATCHDOG_MS));
  if (
    r === "timed-out" &&
    Atomics.compareExchange(word, WATCHDOG_STATE, WATCHDOG_ARMED, WATCHDOG_FIRED) === WATCHDOG_ARMED
  ) {
    vcpu.stop();
  }
  // Wait for the owner to take note (it moves FIRED or ARMED back to IDLE).
  while (Atomics.load(word, WATCHDOG_STATE) === WATCHDOG_FIRED)
    Atomics.wait(word, WATCHDOG_STATE, WATCHDOG_FIRED);
}
