import { readFileSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { VcpuLink } from "../engines/kvm/vcpu_link.js";
import { UsageError } from "../errors.js";
import { installKickHandler } from "../sys/libc.js";
import type { VmConfig } from "./config.js";
import { ConsoleRing } from "./console_ring.js";
import type { MachineMessage, MachineWorkerData, VmResult } from "./machine_worker.js";
import { VmError } from "./vm_error.js";

export type { VmResult } from "./machine_worker.js";

export interface VmHandlers {
  /** Console output of the guest (the UART's transmitter). */
  onOutput?: (bytes: Uint8Array) => void;
  /** The guest's init wrote the "userspace started" marker (ms since machine start). */
  onUserspace?: (ms: number) => void;
}

/**
 * One virtual machine, driven from the main thread (the supervisor: console, signals, API). The
 * machine itself (memory, devices, engine) lives in a machine worker thread (machine_worker.ts);
 * this object starts it, feeds it console input, stops it, and reports how it ended. The CLI, the
 * REST API and tests all use this class.
 */
export class Vm {
  readonly config: VmConfig;
  private readonly worker: Worker;
  private readonly input = new ConsoleRing();
  private readonly control = new Int32Array(new SharedArrayBuffer(8));
  private kick: VcpuLink | undefined;
  private readonly done: Promise<VmResult>;

  private constructor(config: VmConfig, handlers: VmHandlers) {
    this.config = config;
    installKickHandler();
    const kernel = readBytes(config.kernel, "kernel", "--kernel");
    const initrd = config.initrd === undefined ? undefined : readBytes(config.initrd, "initrd", "--initrd");
    const data: MachineWorkerData = {
      config,
      kernel,
      ...(initrd === undefined ? {} : { initrd }),
      input: this.input.buffer,
      control: this.control.buffer as SharedArrayBuffer,
    };
    this.worker = new Worker(new URL("./machine_worker.js", import.meta.url), { workerData: data });
    this.done = new Promise<VmResult>((resolve, reject) => {
      let settled = false;
      this.worker.on("message", (m: MachineMessage) => {
        switch (m.t) {
          case "ready":
            if (m.kickLink !== undefined) this.kick = new VcpuLink(m.kickLink);
            break;
          case "out":
            handlers.onOutput?.(m.data);
            break;
          case "userspace":
            handlers.onUserspace?.(m.ms);
            break;
          case "done":
            settled = true;
            resolve(m.result);
            break;
          case "error":
            settled = true;
            reject(m.usage ? new UsageError(m.code, m.message) : new VmError(m.code, m.message));
            break;
        }
      });
      this.worker.on("error", (err) => {
        settled = true;
        reject(new VmError("VM_MACHINE", `the machine thread failed: ${err.message}`, {}, err));
      });
      this.worker.on("exit", (code) => {
        if (!settled)
          reject(new VmError("VM_MACHINE", `the machine thread exited (code ${code}) without a result`));
      });
    });
  }

  /** Starts a machine. Throws for unreadable files; engine and boot errors reject `wait()`. */
  static start(config: VmConfig, handlers: VmHandlers = {}): Vm {
    return new Vm(config, handlers);
  }

  /** Queues console input for the guest's UART; returns how many bytes fit. */
  sendInput(bytes: Uint8Array): number {
    const n = this.input.write(bytes);
    this.kick?.kick(); // the machine thread may be inside KVM_RUN with the guest halted
    return n;
  }

  /** Asks the machine to stop (the run ends with reason "stopped"). */
  stop(): void {
    Atomics.store(this.control, 0, 1);
    Atomics.notify(this.control, 1);
    this.input.wake();
    this.kick?.stop();
  }

  /**
   * Pauses the machine: every vCPU leaves the guest and waits (KVM: the boot vCPU's link, which
   * pauses the others; soft: the CPU loop), and the machine clock stops. No-op before it runs.
   */
  pause(): void {
    Atomics.store(this.control, 1, 1);
    this.kick?.pause();
  }

  resume(): void {
    Atomics.store(this.control, 1, 0);
    Atomics.notify(this.control, 1);
    this.kick?.resume();
  }

  /** Resolves when the machine has stopped, with how it ended. */
  async wait(): Promise<VmResult> {
    try {
      return await this.done;
    } finally {
      await this.worker.terminate();
    }
  }
}

function readBytes(path: string, what: string, flag: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      "VM_FILE",
      code === "ENOENT"
        ? `${what} "${path}" does not exist: give an existing file with ${flag}`
        : `cannot read ${what} "${path}": ${(err as Error).message}`,
      { path },
      err,
    );
  }
}
