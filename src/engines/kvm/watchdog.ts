import { Worker } from "node:worker_threads";
import type { VcpuLink } from "./vcpu_link.js";

/** Shared words of a watchdog: [STATE] one of WATCHDOG_*, [MS] the time limit of the armed run. */
export const WATCHDOG_STATE = 0;
export const WATCHDOG_MS = 1;
export const WATCHDOG_IDLE = 0;
export const WATCHDOG_ARMED = 1;
export const WATCHDOG_FIRED = 2;
export const WATCHDOG_QUIT = 3;

/**
 * A re-armable time limit on a vCPU that runs in the calling thread (watchdog_worker.ts does the
 * waiting). `arm(ms)` before KVM_RUN, `disarm()` after: true if the limit was hit (the vCPU was
 * stopped; its stop word is left set for the caller to clear).
 */
export class Watchdog {
  private readonly word: Int32Array;
  private readonly worker: Worker;

  private constructor(worker: Worker, word: Int32Array) {
    this.worker = worker;
    this.word = word;
  }

  static async start(link: VcpuLink): Promise<Watchdog> {
    const word = new Int32Array(new SharedArrayBuffer(8));
    const worker = new Worker(new URL("./watchdog_worker.js", import.meta.url), {
      workerData: { link: link.buffer, state: word.buffer },
    });
    await new Promise<void>((resolve, reject) => {
      worker.once("message", () => resolve());
      worker.once("error", reject);
    });
    worker.unref();
    return new Watchdog(worker, word);
  }

  arm(ms: number): void {
    Atomics.store(this.word, WATCHDOG_MS, Math.max(1, Math.ceil(ms)));
    Atomics.store(this.word, WATCHDOG_STATE, WATCHDOG_ARMED);
    Atomics.notify(this.word, WATCHDOG_STATE);
  }

  /** Ends the armed period; returns true if the watchdog fired during it. */
  disarm(): boolean {
    const prev = Atomics.exchange(this.word, WATCHDOG_STATE, WATCHDOG_IDLE);
    Atomics.notify(this.word, WATCHDOG_STATE);
    return prev === WATCHDOG_FIRED;
  }

  /** Ends the thread (it leaves by itself; never terminated while loading native code). */
  async stop(): Promise<void> {
    this.worker.ref(); // keep the event loop alive until the thread has left
    const exited = new Promise((r) => this.worker.once("exit", r));
    Atomics.store(this.word, WATCHDOG_STATE, WATCHDOG_QUIT);
    Atomics.notify(this.word, WATCHDOG_STATE);
    await exited;
  }
}
