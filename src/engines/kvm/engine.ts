import { Worker } from "node:worker_threads";
import type { EntryState } from "../../boot/entry_state.js";
import type { IrqLine } from "../../bus/device.js";
import { GuestMemory, type RegionDescriptor } from "../../memory/guest_memory.js";
import {
  KVM_IDENTITY_MAP_START,
  KVM_TSS_START,
  MMIO_HOLE_END,
  MMIO_HOLE_START,
} from "../../memory/layout.js";
import type { CpuidEntry } from "../../sys/kvm_abi.js";
import { installKickHandler } from "../../sys/libc.js";
import { mapAnonymous, unmap, viewHostMemory } from "../../sys/mman.js";
import type { KvmDevice } from "./kvm_device.js";
import { KvmError } from "./kvm_error.js";
import { newMailbox, serveMailboxes } from "./mailbox.js";
import { type IoHandler, newExitCounters, runVcpu, type VmEvent, exitCountsByName } from "./run_loop.js";
import { DEFAULT_KVM_PATH, KvmSystem } from "./system.js";
import { configureVcpu, KvmVcpu } from "./vcpu.js";
import { LINK_EXITED, VcpuLink } from "./vcpu_link.js";
import { Watchdog } from "./watchdog.js";
import type { KvmVm } from "./vm.js";
import type { VcpuWorkerData, VcpuWorkerMessage } from "./vcpu_worker.js";

export interface KvmEngineOptions {
  /** Bytes of guest RAM: below the MMIO hole first, the rest from 4 GiB up. */
  memoryBytes: number;
  cpus: number;
  /** /dev/kvm, or another path (tests inject a missing one). */
  kvmPath?: string;
  /**
   * The KVM ioctl interface (default: the host's, through sys/). Tests only: a scripted fake
   * (test/engines/kvm/fake_kvm.ts) that vCPU threads rebuild from its `transfer`.
   */
  kvm?: KvmDevice;
  /**
   * In-kernel irqchip and PIT (default true). Without it HLT exits to user space and there are no
   * secondary CPUs: the bare mode some payload tests use.
   */
  irqchip?: boolean;
}

export interface KvmRunOptions {
  /** Called between exits and when the machine thread is kicked: serve devices, console input. */
  poll?: () => void;
  /** Stop the VM after this many ms (a watchdog thread kicks the vCPUs). */
  timeoutMs?: number;
  /** The machine was paused (true) or resumed (false) through machineLink.pause()/resume(). */
  onPause?: (paused: boolean) => void;
}

export interface KvmRunResult {
  /** The event that ended the run: the boot CPU's, or the first secondary's that was not a stop. */
  event: VmEvent;
  /** Which vCPU it came from. */
  cpu: number;
  /** Every vCPU's event. */
  cpuEvents: VmEvent[];
  /** True if the watchdog ended the run. */
  timedOut: boolean;
  exits: Record<string, number>;
}

/**
 * The KVM engine of one machine, living in the machine thread (the one that owns the devices):
 * opens KVM, creates the VM with its memory, in-kernel irqchip, PIT and TSS, and runs it: the boot
 * vCPU in this thread, each secondary vCPU in a worker that forwards its I/O through a mailbox.
 */
export class KvmEngine {
  readonly system: KvmSystem;
  readonly vm: KvmVm;
  readonly memory: GuestMemory;
  readonly regions: readonly RegionDescriptor[];
  readonly cpus: number;
  readonly irqchip: boolean;
  private readonly supportedCpuid: CpuidEntry[];
  private readonly bootLink = new VcpuLink();
  private readonly links: VcpuLink[] = [];
  private readonly counters: Int32Array[] = [];
  private running = false;

  private constructor(
    system: KvmSystem,
    vm: KvmVm,
    regions: RegionDescriptor[],
    cpus: number,
    irqchip: boolean,
  ) {
    this.system = system;
    this.vm = vm;
    this.regions = regions;
    this.cpus = cpus;
    this.irqchip = irqchip;
    this.memory = new GuestMemory(regions, viewHostMemory);
    this.supportedCpuid = system.supportedCpuid();
  }

  static create(opts: KvmEngineOptions): KvmEngine {
    const irqchip = opts.irqchip ?? true;
    if (!Number.isInteger(opts.cpus) || opts.cpus < 1) {
      throw new KvmError("KVM_CPUS", `--cpus must be a positive integer, got ${opts.cpus}`, {
        cpus: opts.cpus,
      });
    }
    if (!irqchip && opts.cpus > 1) {
      throw new KvmError(
        "KVM_CPUS",
        "secondary CPUs need the in-kernel irqchip (INIT/SIPI go through the LAPIC)",
      );
    }
    installKickHandler();
    const system = KvmSystem.open(opts.kvmPath ?? DEFAULT_KVM_PATH, opts.kvm);
    const maxVcpus = system.maxVcpus();
    if (opts.cpus > maxVcpus) {
      system.close(); // (asked before closing: an ioctl on the closed fd would fail with EBADF)
      throw new KvmError(
        "KVM_CPUS",
        `--cpus ${opts.cpus} is more than this host's KVM allows (${maxVcpus})`,
        {
          cpus: opts.cpus,
        },
      );
    }
    const vm = system.createVm();
    const regions: RegionDescriptor[] = [];
    try {
      vm.setTssAndIdentityMap(KVM_TSS_START, KVM_IDENTITY_MAP_START);
      if (irqchip) {
        vm.createIrqchip();
        vm.createPit2();
      }
      const low = Math.min(opts.memoryBytes, MMIO_HOLE_START);
      const layout = [{ base: 0, size: low }];
      if (opts.memoryBytes > low) layout.push({ base: MMIO_HOLE_END, size: opts.memoryBytes - low });
      for (const r of layout) {
        const address = mapAnonymous(r.size);
        regions.push({ base: r.base, size: r.size, backing: { kind: "host", address } });
        vm.addMemory(r.base, r.size, address);
      }
      return new KvmEngine(system, vm, regions, opts.cpus, irqchip);
    } catch (err) {
      vm.close();
      system.close();
      throw err;
    }
  }

  /** An interrupt line into the in-kernel irqchip (KVM_IRQ_LINE on GSI `gsi`, PIC and IOAPIC). */
  irqLine(gsi: number): IrqLine {
    const vm = this.vm;
    return { setLevel: (high) => vm.irqLine(gsi, high) };
  }

  /** Asks every vCPU to stop at its next exit, kicking those inside KVM_RUN. Safe from device callbacks. */
  requestStop(): void {
    this.bootLink.stop();
    for (const l of this.links) l.stop();
  }

  /** The machine thread's link (another thread kicks it to make it poll, e.g. console input). */
  get machineLink(): VcpuLink {
    return this.bootLink;
  }

  /** Exit counts by reason over all vCPUs so far. */
  exitCounts(): Record<string, number> {
    return exitCountsByName(this.counters);
  }

  /**
   * Runs the machine until a VM event: the boot vCPU runs here (this thread blocks, its event loop
   * does not turn until the run ends: devices are served from `poll` and from the exits themselves).
   */
  async run(
    entry: EntryState | ((vcpu: KvmVcpu) => void),
    io: IoHandler,
    opts: KvmRunOptions = {},
  ): Promise<KvmRunResult> {
    if (this.running) throw new KvmError("KVM_BUSY", "this VM is already running");
    this.running = true;
    const mailboxes: Int32Array[] = [];
    const workers: { worker: Worker; done: Promise<VcpuWorkerMessage> }[] = [];
    // Secondary vCPUs: created here (a VM ioctl), configured and run in their own thread.
    for (let id = 1; id < this.cpus; id++) {
      const fd = this.vm.createVcpu(id);
      const link = new VcpuLink();
      const box = newMailbox();
      const counters = newExitCounters();
      this.links.push(link);
      this.counters.push(counters);
      mailboxes.push(box);
      const data: VcpuWorkerData = {
        fd,
        id,
        mmapSize: this.system.vcpuMmapSize,
        cpuCount: this.cpus,
        supportedCpuid: this.supportedCpuid,
        link: link.buffer,
        ownerLink: this.bootLink.buffer,
        mailbox: box.buffer as SharedArrayBuffer,
        counters: counters.buffer as SharedArrayBuffer,
        ...(this.system.device.transfer === undefined ? {} : { kvm: this.system.device.transfer }),
      };
      const worker = new Worker(new URL("./vcpu_worker.js", import.meta.url), { workerData: data });
      let ready!: () => void;
      const readyP = new Promise<void>((r) => (ready = r));
      const done = new Promise<VcpuWorkerMessage>((resolve) => {
        worker.on("message", (m: VcpuWorkerMessage) => {
          if (m.kind === "ready") ready();
          else resolve(m);
        });
        worker.on("error", (err) => resolve({ kind: "error", id, message: err.message }));
        worker.on("exit", () => {
          ready();
          resolve({ kind: "error", id, message: "vCPU thread exited" });
        });
      });
      workers.push({ worker, done });
      await readyP;
    }

    const vcpu = new KvmVcpu(this.vm.createVcpu(0), 0, this.system.vcpuMmapSize, this.system.device);
    const counters = newExitCounters();
    this.counters.unshift(counters);
    if (typeof entry === "function") {
      configureVcpu(vcpu, {
        supportedCpuid: this.supportedCpuid,
        cpuCount: this.cpus,
        irqchip: this.irqchip,
      });
      entry(vcpu);
    } else {
      configureVcpu(vcpu, {
        supportedCpuid: this.supportedCpuid,
        cpuCount: this.cpus,
        irqchip: this.irqchip,
        entry,
      });
    }
    this.bootLink.attach(vcpu.runAddressForLink());
    // A secondary that failed before this link was attached could not kick it: look now, or the
    // boot vCPU would run on until its next exit (with an idle guest and the irqchip, maybe never).
    if (this.links.some((l) => l.state === LINK_EXITED)) this.bootLink.stop();

    const watchdog = opts.timeoutMs === undefined ? undefined : await Watchdog.start(this.bootLink);
    watchdog?.arm(opts.timeoutMs!);
    let timedOut = false;

    const links = this.links;
    let secondaryExited = false;
    const userPoll = opts.poll;
    const poll = () => {
      serveMailboxes(mailboxes, io);
      if (!secondaryExited && links.some((l) => l.state === LINK_EXITED)) {
        secondaryExited = true;
        this.bootLink.stop();
      }
      if (userPoll !== undefined) userPoll();
    };
    let bootEvent: VmEvent = { kind: "stopped" };
    let failure: unknown;
    try {
      // Pausing the boot vCPU (from any thread: its link) pauses the machine: the others follow.
      const onPause = (paused: boolean) => {
        for (const l of links) {
          if (paused) l.pause();
          else l.resume();
        }
        opts.onPause?.(paused);
      };
      bootEvent = runVcpu(vcpu, io, counters, this.bootLink.control, { poll, onPause });
    } catch (err) {
      failure = err; // e.g. KVM_RUN failed: stop the other vCPUs first, then report it
    } finally {
      this.bootLink.markExited();
      timedOut = watchdog?.disarm() ?? false;
    }
    await watchdog?.stop();
    // Stop the secondaries; keep answering their mailboxes until each has left its loop.
    for (const l of links) l.stop();
    const results: VcpuWorkerMessage[] = [];
    for (const w of workers) {
      let settled: VcpuWorkerMessage | undefined;
      void w.done.then((m) => (settled = m));
      const deadline = Date.now() + 2000;
      while (settled === undefined && Date.now() < deadline) {
        serveMailboxes(mailboxes, io);
        await new Promise((r) => setTimeout(r, 1));
      }
      results.push(settled ?? { kind: "error", id: results.length + 1, message: "vCPU thread did not stop" });
      await w.worker.terminate();
    }
    const cpuEvents: VmEvent[] = [bootEvent];
    for (const m of results) {
      cpuEvents.push(
        m.kind === "exited"
          ? m.event
          : { kind: "unhandled_exit", reason: -1, name: m.kind === "error" ? m.message : "?", dump: "" },
      );
    }
    this.running = false;
    if (failure !== undefined) throw failure;
    let cpu = 0;
    if (bootEvent.kind === "stopped" && !timedOut) {
      const other = cpuEvents.findIndex((e) => e.kind !== "stopped");
      if (other > 0) cpu = other;
    }
    return { event: cpuEvents[cpu]!, cpu, cpuEvents, timedOut, exits: this.exitCounts() };
  }

  /** Releases the VM. Call only after run() has returned: every vCPU thread has stopped by then. */
  close(): void {
    // kvm_run areas are unmapped only now: until every thread is gone, one may still kick another.
    for (const l of [this.bootLink, ...this.links]) {
      const address = l.runAddress;
      if (address !== 0n) this.system.device.unmapRun(address, this.system.vcpuMmapSize);
    }
    this.vm.close();
    this.system.close();
    for (const r of this.regions) if (r.backing.kind === "host") unmap(r.backing.address, r.size);
  }
}
