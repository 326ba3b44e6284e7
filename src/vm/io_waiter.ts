import { Worker } from "node:worker_threads";

/**
 * Wakes the machine thread when host I/O is ready while the guest idles (brief, "Threads"): on
 * KVM the machine thread may sit in KVM_RUN with the guest halted, so host-side completions
 * (virtio-blk's I/O thread, a TAP, a vsock socket) would wait for the next exit. A waiter thread
 * blocks in poll(2) on the devices' descriptors and kicks the machine thread's vCPU out of KVM_RUN.
 *
 * Shared Int32 words: [0] a version, bumped when [2..] change; [1] PENDING: the waiter saw
 * readiness and kicked (the machine clears it after polling its devices; the waiter waits for
 * that before it polls again, so a descriptor that stays ready does not spin); [2] count; then
 * pairs of (fd, events) for up to MAX_FDS descriptors; last word: quit.
 */
export const MAX_FDS = 32;
export const W_VERSION = 0;
export const W_PENDING = 1;
export const W_COUNT = 2;
export const W_FDS = 3;
export const W_QUIT = W_FDS + 2 * MAX_FDS;
export const W_WORDS = W_QUIT + 1;

export class IoWaiter {
  private readonly words = new Int32Array(new SharedArrayBuffer(W_WORDS * 4));
  private readonly worker: Worker;
  private key = "";

  /** @param kickLink the machine thread's VcpuLink buffer (engines/kvm/vcpu_link.ts). */
  constructor(kickLink: SharedArrayBuffer) {
    this.worker = new Worker(new URL("./io_waiter_worker.js", import.meta.url), {
      workerData: { words: this.words.buffer, kickLink },
    });
    this.worker.unref();
  }

  /** Publishes the descriptors to watch (called from the machine thread's poll; cheap if unchanged). */
  setFds(fds: readonly { fd: number; events: number }[]): void {
    const list = fds.slice(0, MAX_FDS);
    const key = list.map((f) => `${f.fd}:${f.events}`).join(",");
    if (key === this.key) return;
    this.key = key;
    list.forEach((f, i) => {
      this.words[W_FDS + 2 * i] = f.fd;
      this.words[W_FDS + 2 * i + 1] = f.events;
    });
    Atomics.store(this.words, W_COUNT, list.length);
    Atomics.add(this.words, W_VERSION, 1);
    Atomics.notify(this.words, W_VERSION);
  }

  /** True once per readiness the waiter reported (and re-arms it): poll the devices with force. */
  takePending(): boolean {
    if (Atomics.load(this.words, W_PENDING) === 0) return false;
    Atomics.store(this.words, W_PENDING, 0);
    Atomics.notify(this.words, W_PENDING);
    return true;
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.worker.once("exit", r));
    this.worker.ref();
    Atomics.store(this.words, W_QUIT, 1);
    Atomics.store(this.words, W_PENDING, 0);
    Atomics.notify(this.words, W_PENDING);
    Atomics.add(this.words, W_VERSION, 1);
    Atomics.notify(this.words, W_VERSION);
    await exited;
  }
}
