import { RUN_IMMEDIATE_EXIT } from "../../sys/kvm_abi.js";
import { KICK_SIGNAL, threadKill, threadSelf } from "../../sys/libc.js";
import { viewHostMemory } from "../../sys/mman.js";
import { CONTROL_PAUSE, CONTROL_STOP } from "./run_loop.js";

/**
 * What other threads need to reach one running vCPU, in one SharedArrayBuffer (32 bytes):
 *   Int32 [0] stop requested (run_loop.ts CONTROL_STOP)     Int32 [1] state (LINK_*)
 *   Int32 [2] pause requested (CONTROL_PAUSE)               Int32 [3] unused
 *   BigInt64 [2] pthread_t of the thread running it          BigInt64 [3] host address of its kvm_run
 * Kicking = set kvm_run.immediate_exit, then signal the thread: KVM_RUN returns EINTR whether the
 * signal lands inside it or just before it (api.rst, `immediate_exit`).
 */
export const LINK_CREATED = 0;
export const LINK_RUNNING = 1;
export const LINK_EXITED = 2;
export const LINK_STATE = 1;

export class VcpuLink {
  readonly buffer: SharedArrayBuffer;
  readonly control: Int32Array;
  private readonly words: BigInt64Array;
  private runFlag: Uint8Array | undefined;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(32)) {
    this.buffer = buffer;
    this.control = new Int32Array(buffer, 0, 4);
    this.words = new BigInt64Array(buffer, 0, 4);
  }

  /** Called by the thread that runs the vCPU, before its first KVM_RUN. */
  attach(runAddress: bigint): void {
    Atomics.store(this.words, 2, threadSelf());
    Atomics.store(this.words, 3, runAddress);
    Atomics.store(this.control, LINK_STATE, LINK_RUNNING);
  }

  /** Host address of the vCPU's kvm_run (0 before attach). */
  get runAddress(): bigint {
    return Atomics.load(this.words, 3);
  }

  get state(): number {
    return Atomics.load(this.control, LINK_STATE);
  }

  markExited(): void {
    Atomics.store(this.control, LINK_STATE, LINK_EXITED);
    Atomics.notify(this.control, LINK_STATE);
  }

  /** Interrupts the vCPU's KVM_RUN (if it is in one) so its loop looks at its control words. */
  kick(): void {
    const thread = Atomics.load(this.words, 2);
    const runAddress = Atomics.load(this.words, 3);
    if (thread === 0n || runAddress === 0n || this.state === LINK_EXITED) return;
    this.runFlag ??= new Uint8Array(viewHostMemory(runAddress, RUN_IMMEDIATE_EXIT + 1));
    Atomics.store(this.runFlag, RUN_IMMEDIATE_EXIT, 1);
    threadKill(thread, KICK_SIGNAL);
  }

  /** Asks the vCPU's loop to return `stopped`, and kicks it. */
  stop(): void {
    Atomics.store(this.control, CONTROL_STOP, 1);
    Atomics.notify(this.control, CONTROL_PAUSE); // a paused loop wakes up to stop
    this.kick();
  }

  /** Makes the vCPU wait outside KVM_RUN (at its next exit; kicked now) until resume(). */
  pause(): void {
    Atomics.store(this.control, CONTROL_PAUSE, 1);
    this.kick();
  }

  resume(): void {
    Atomics.store(this.control, CONTROL_PAUSE, 0);
    Atomics.notify(this.control, CONTROL_PAUSE);
  }
}
