/**
 * The machine thread of a VMM process (brief, "Threading model"): owns guest memory, the buses and
 * every device model, loads the kernel through boot/, and runs the engine:
 *   - KVM: the boot vCPU runs here (KvmEngine.run); secondary vCPUs run in their own threads and
 *     forward their I/O exits here through mailboxes;
 *   - soft: the software CPU's loop runs here (SoftCpu.run(budget) between device polls).
 * Console output goes to the main thread by postMessage; console input and stop requests come
 * through shared memory (ConsoleRing, a control word), because this thread is busy in KVM_RUN or
 * in the CPU loop and does not turn its event loop while the guest runs.
 */
import { parentPort, workerData } from "node:worker_threads";
import { guestRamRegions } from "../boot/e820.js";
import type { EntryState } from "../boot/entry_state.js";
import { isPayloadError, type LinuxBootConfig, loadLinux } from "../boot/linux_loader.js";
import { HostClock } from "../devices/clock.js";
import { PcPlatform } from "../devices/pc_platform.js";
import type { ConsoleDevice } from "../devices/virtio/console/device.js";
import { attachVirtioDevices, virtioMmioSlot } from "../devices/virtio/factory.js";
import type { MmioTransport } from "../devices/virtio/transport_mmio.js";
import { BusIo } from "../engines/kvm/bus_io.js";
import { KvmEngine } from "../engines/kvm/engine.js";
import { describeVmEvent } from "../engines/kvm/run_loop.js";
import type { BtStats } from "../engines/soft/bt/bt_stats.js";
import { DEFAULT_SOFT_TECHNIQUE, type SoftTechnique } from "../engines/soft/technique.js";
import { VesselError } from "../errors.js";
import { GuestMemory } from "../memory/guest_memory.js";
import type { VmConfig } from "./config.js";
import { ConsoleRing } from "./console_ring.js";
import { IoWaiter } from "./io_waiter.js";
import { MachineDevices, type MachineStop } from "./machine.js";
import {
  connectVirtioConsoles,
  type ParavirtReport,
  paravirtReport,
  type VirtioDeviceReport,
  virtioReport,
} from "./paravirt_report.js";

export interface MachineWorkerData {
  config: VmConfig;
  kernel: Uint8Array;
  initrd?: Uint8Array;
  input: SharedArrayBuffer;
  /**
   * Int32 [0]: the main thread asks to stop (Ctrl-A x, a signal, the API); [1]: pause (soft engine;
   * on KVM the main thread pauses the boot vCPU's link directly, see Vm.pause).
   */
  control: SharedArrayBuffer;
}

/** How a run ended, for the CLI and the API. */
export interface VmResult {
  engine: "kvm" | "soft";
  /**
   * exit: the guest wrote its status to the debug-exit port; stopped: the VMM stopped it (user,
   * timeout); reset: the guest reset the machine (i8042, KVM system event); shutdown: triple fault
   * or a guest power-off; crash: the engine could not go on (internal error, failed entry,
   * unimplemented instruction).
   */
  reason: "exit" | "stopped" | "reset" | "shutdown" | "crash";
  exitStatus?: number;
  /** A sentence, with the register dump for crashes. */
  detail: string;
  timedOut: boolean;
  /** Time from machine start to the guest's "userspace started" marker. */
  bootToUserspaceMs?: number;
  wallMs: number;
  /** KVM: VM exits by reason, all vCPUs. */
  exits?: Record<string, number>;
  /** KVM: the devices the I/O exits were for, busiest first. */
  exitsByDevice?: { what: string; count: number }[];
  /** Soft engine: instructions executed. */
  instructions?: number;
  unclaimed: { portReads: number; portWrites: number; mmioReads: number; mmioWrites: number };
  uart: { txBytes: number; rxBytes: number };
  /** virtio devices: transport and device counters (vm/paravirt_report.ts). */
  virtio?: VirtioDeviceReport[];
  /** Soft engine: the KVM PV interface (hypercalls, kvmclock). */
  paravirt?: ParavirtReport;
  /** Soft engine: the technique that ran guest code. */
  technique?: SoftTechnique;
  /** Soft engine, technique bt: the translator's counters. */
  bt?: BtStats;
}

export type MachineMessage =
  | { t: "ready"; kickLink?: SharedArrayBuffer }
  | { t: "out"; data: Uint8Array }
  | { t: "userspace"; ms: number }
  | { t: "done"; result: VmResult }
  | { t: "error"; message: string; code: string; usage: boolean };

const data = workerData as MachineWorkerData;
const post = (m: MachineMessage) => parentPort!.postMessage(m);
const control = new Int32Array(data.control);
const input = new ConsoleRing(data.input);
const clock = new HostClock();

function output(bytes: Uint8Array | number): void {
  post({ t: "out", data: typeof bytes === "number" ? Uint8Array.of(bytes) : bytes.slice() });
}

/** Console input goes to the UART, or to the virtio console when the guest's console is hvc0. */
function feedInput(dev: MachineDevices, hvc?: ConsoleDevice): void {
  if (hvc !== undefined) {
    if (input.available() > 0) hvc.input(input.read(4096));
    return;
  }
  const room = dev.uart.rxSpace();
  if (room > 0 && input.available() > 0) dev.uart.receive(input.read(room));
}

/**
 * @param userspaceMs wall time of the userspace marker since machine start; default: the
 *   debug-exit device's clock time (the host clock, on KVM).
 */
function summary(
  dev: MachineDevices,
  started: number,
  userspaceMs?: number,
): Pick<VmResult, "unclaimed" | "uart" | "wallMs" | "bootToUserspaceMs"> {
  const ns = userspaceMs === undefined ? dev.debugExit.userspaceStartedNs : userspaceMs * 1e6;
  return {
    unclaimed: {
      portReads: dev.ports.unclaimedReads,
      portWrites: dev.ports.unclaimedWrites,
      mmioReads: dev.mmio.unclaimedReads,
      mmioWrites: dev.mmio.unclaimedWrites,
    },
    uart: { txBytes: dev.uart.stats.txBytes, rxBytes: dev.uart.stats.rxBytes },
    wallMs: Math.max(performance.now() - started, clock.nowNs() / 1e6),
    ...(ns === undefined ? {} : { bootToUserspaceMs: ns / 1e6 }),
  };
}

/** The virtio console that takes console input: the first one, when the command line says console=hvc0. */
function hvcConsole(consoles: ConsoleDevice[]): ConsoleDevice | undefined {
  return /(^|\s)console=hvc0(\s|$)/.test(data.config.cmdline) ? consoles[0] : undefined;
}

function stopResult(
  why: MachineStop | undefined,
): Pick<VmResult, "reason" | "exitStatus" | "detail"> | undefined {
  if (why === undefined) return undefined;
  if (why.kind === "exit") {
    return { reason: "exit", exitStatus: why.status, detail: `the guest exited with status ${why.status}` };
  }
  return { reason: "reset", detail: "the guest reset the machine (i8042 reset line)" };
}

function load(memory: GuestMemory, arch: "x86_64" | "i386", acpi: boolean, decompress = false): EntryState {
  const c = data.config;
  const boot: LinuxBootConfig = {
    kernel: data.kernel,
    initrd: data.initrd,
    cmdline: c.cmdline,
    memSize: c.memBytes,
    cpus: c.cpus,
    virtioDevices: (c.virtio ?? []).map((_, i) => virtioMmioSlot(i)),
    arch,
    acpi,
    kernelName: c.kernel,
  };
  if (decompress) {
    try {
      return loadLinux(memory, { ...boot, decompress: true });
    } catch (err) {
      // The decompress path checks everything before writing guest memory, so the normal path
      // starts clean; it runs the kernel's own decompressor instead.
      if (!isPayloadError(err)) throw err;
      process.stderr.write(
        `vessel: booting the bzImage as it is (kernel not decompressed by the VMM): ${err.message}\n`,
      );
    }
  }
  return loadLinux(memory, boot);
}

/** Lets each virtio transport do its host-side I/O (G's factory.ts, step 3). */
function pollVirtio(transports: readonly MmioTransport[], force: boolean): void {
  for (const t of transports) t.poll(force);
}

async function runKvm(): Promise<VmResult> {
  const c = data.config;
  const started = performance.now();
  const engine = KvmEngine.create({
    memoryBytes: c.memBytes,
    cpus: c.cpus,
    ...(c.kvmPath === undefined ? {} : { kvmPath: c.kvmPath }),
  });
  let transports: MmioTransport[] = [];
  let waiter: IoWaiter | undefined;
  try {
    let why: MachineStop | undefined;
    const dev = new MachineDevices({
      clock,
      irq: (n) => engine.irqLine(n),
      output,
      stop: (w) => {
        why ??= w;
        engine.requestStop();
      },
    });
    dev.rtc?.setMemorySize(Math.min(c.memBytes, 0xc000_0000), Math.max(0, c.memBytes - 0xc000_0000));
    let marked = false;
    transports = attachVirtioDevices(c.virtio ?? [], {
      memory: engine.memory,
      mmio: dev.mmio,
      irqLine: (gsi) => engine.irqLine(gsi),
    });
    const hvc = hvcConsole(connectVirtioConsoles(transports, output));
    const entry = load(engine.memory, "x86_64", true);
    // Host I/O that completes while the guest idles inside KVM_RUN kicks us through the waiter.
    waiter = transports.length > 0 ? new IoWaiter(engine.machineLink.buffer) : undefined;
    post({ t: "ready", kickLink: engine.machineLink.buffer });
    const busIo = new BusIo(dev.ports, dev.mmio);
    const result = await engine.run(entry, busIo, {
      ...(c.timeoutMs === undefined ? {} : { timeoutMs: c.timeoutMs }),
      onPause: (paused) => {
        if (paused) clock.pause();
        else clock.resume();
      },
      poll: () => {
        feedInput(dev, hvc);
        if (Atomics.load(control, 0) !== 0) engine.requestStop();
        const rtc = dev.rtc;
        if (rtc !== undefined && clock.nowNs() >= rtc.nextDeadlineNs()) rtc.advance();
        if (!marked && dev.debugExit.userspaceStartedNs !== undefined) {
          marked = true;
          post({ t: "userspace", ms: dev.debugExit.userspaceStartedNs / 1e6 });
        }
        if (transports.length > 0) {
          pollVirtio(transports, waiter?.takePending() ?? false);
          waiter?.setFds(transports.flatMap((t) => t.waitFds()));
        }
      },
    });
    const base = {
      engine: "kvm" as const,
      timedOut: result.timedOut,
      exits: result.exits,
      exitsByDevice: busIo.busiest(),
      ...summary(dev, started),
      ...(transports.length === 0 ? {} : { virtio: virtioReport(transports) }),
    };
    const byDevice = stopResult(why);
    if (byDevice !== undefined) return { ...base, ...byDevice };
    const e = result.event;
    const cpu = result.cpu === 0 ? "" : `cpu ${result.cpu}: `;
    switch (e.kind) {
      case "stopped":
        return {
          ...base,
          reason: "stopped",
          detail: result.timedOut ? "the time limit was reached" : "stopped by the user",
        };
      case "system_event":
        return {
          ...base,
          reason: e.type === "reset" ? "reset" : e.type === "crash" ? "crash" : "shutdown",
          detail: cpu + describeVmEvent(e),
        };
      case "shutdown":
      case "hlt":
        return { ...base, reason: "shutdown", detail: cpu + describeVmEvent(e) };
      default:
        return { ...base, reason: "crash", detail: cpu + describeVmEvent(e) };
    }
  } finally {
    await waiter?.stop();
    for (const t of transports) t.close();
    engine.close();
  }
}

/**
 * The soft engine's loop (helper D's SoftCpu in src/engines/soft/): one CPU, the PC chipset of
 * devices/pc_platform.ts (PIC, PIT, RTC) in this thread, the 32-bit entry of an i386 kernel, and
 * virtual time from instructions retired (InstructionClock: the timers agree with each other and
 * do not jitter with host load).
 */
async function runSoft(): Promise<VmResult> {
  const c = data.config;
  const started = performance.now();
  const { SoftCpu } = await import("../engines/soft/soft_cpu.js");
  const { InstructionClock } = await import("../engines/soft/instruction_clock.js");
  const memory = GuestMemory.shared(guestRamRegions(c.memBytes));
  const vclock = new InstructionClock(10);
  // virtio-mmio devices sit on GSIs 16-23, which only an IOAPIC has: with virtio devices the
  // machine gets the APIC platform (and ACPI's MADT to find it); without, the PIC-only PC.
  const specs = c.virtio ?? [];
  const apic = specs.length > 0;
  const platform = new PcPlatform({ clock: vclock, apic });
  let why: MachineStop | undefined;
  const dev = new MachineDevices({
    clock: vclock,
    irq: (n) => platform.irqLine(n),
    output,
    stop: (w) => {
      why ??= w;
    },
    rtc: false,
  });
  platform.attach(dev.ports, dev.mmio);
  platform.rtc.setMemorySize(Math.min(c.memBytes, 0xc000_0000), Math.max(0, c.memBytes - 0xc000_0000));
  const transports = attachVirtioDevices(specs, {
    memory,
    mmio: dev.mmio,
    irqLine: (gsi) => platform.irqLine(gsi),
  });
  const hvc = hvcConsole(connectVirtioConsoles(transports, output));
  try {
    return await runSoftCpu();
  } finally {
    for (const t of transports) t.close();
  }

  async function runSoftCpu(): Promise<VmResult> {
    const entry = load(memory, "i386", apic, c.decompress !== false);
    const technique = c.technique ?? DEFAULT_SOFT_TECHNIQUE;
    const cpu = new SoftCpu({
      technique,
      memory,
      ports: dev.ports,
      mmio: dev.mmio,
      interrupts: platform,
      clock: vclock,
      tscHz: platform.tscHz,
      apic,
      platformMsrs: platform,
      nmi: platform,
      poll: () => {
        const now = vclock.nowNs();
        if (now >= platform.nextDeadlineNs()) platform.advance(now);
      },
    });
    cpu.loadEntryState(entry);
    // The KVM paravirtual CPU interface (CPUID signature, kvmclock, hypercalls): Linux then
    // takes its clock and TSC frequency from the VMM instead of calibrating against the PIT.
    const { SoftParavirt } = await import("../engines/soft/paravirt.js");
    const pv = new SoftParavirt(memory);
    cpu.cpu.paravirt = pv;
    vclock.attach(cpu.cpu);
    post({ t: "ready" });
    const deadline = c.timeoutMs === undefined ? Number.POSITIVE_INFINITY : performance.now() + c.timeoutMs;
    let userspaceMs: number | undefined;
    let lastTurn = performance.now();
    for (;;) {
      const stop = cpu.run(200_000);
      feedInput(dev, hvc);
      pollVirtio(transports, false);
      if (userspaceMs === undefined && dev.debugExit.userspaceStartedNs !== undefined) {
        // The device saw virtual (instruction) time; boot-to-userspace is reported in wall time.
        userspaceMs = performance.now() - started;
        post({ t: "userspace", ms: userspaceMs });
      }
      const base = {
        engine: "soft" as const,
        instructions: cpu.cpu.instructions,
        timedOut: false,
        ...summary(dev, started, userspaceMs),
        ...(transports.length === 0 ? {} : { virtio: virtioReport(transports) }),
        paravirt: paravirtReport(pv.stats),
        technique,
        ...(cpu.stats.bt === undefined
          ? {}
          : { bt: { ...cpu.stats.bt, vmmCalls: { ...cpu.stats.bt.vmmCalls } } }),
      };
      const byDevice = stopResult(why);
      if (byDevice !== undefined) return { ...base, ...byDevice };
      // Paused: wait (virtual time stands still, no instruction retires).
      while (Atomics.load(control, 1) !== 0 && Atomics.load(control, 0) === 0)
        Atomics.wait(control, 1, 1, 100);
      if (Atomics.load(control, 0) !== 0)
        return { ...base, reason: "stopped", detail: "stopped by the user" };
      if (performance.now() > deadline) {
        return { ...base, reason: "stopped", timedOut: true, detail: "the time limit was reached" };
      }
      if (stop.kind === "halted") {
        // HLT with interrupts on: skip virtual time to the next timer deadline, but not past the
        // host's clock: while virtual time is behind (the interpreter is slower than its nominal
        // 100 MIPS, as during a boot) idling costs nothing; once it would run ahead, sleep (woken
        // by console input), so an interactive guest's `sleep 1` still takes about a second.
        // A virtio completion already waiting (blk's I/O thread, a TAP, a vsock socket) is what
        // the guest halted for: deliver it now, not after the next timer tick.
        if (transports.length > 0) {
          pollVirtio(transports, true);
          if (platform.hasInterrupt()) continue;
        }
        const target = platform.nextDeadlineNs();
        let hostNs = (performance.now() - started) * 1e6;
        if (target > hostNs && !platform.hasInterrupt()) {
          input.waitForData(Math.min((target - hostNs) / 1e6, 10));
          hostNs = (performance.now() - started) * 1e6;
        }
        vclock.skipTo(Math.min(target, Math.max(hostNs, vclock.nowNs())));
        platform.advance(vclock.nowNs());
      } else if (stop.kind === "shutdown") {
        return { ...base, reason: "shutdown", detail: `${stop.reason}\n${stop.report}` };
      } else if (stop.kind === "unimplemented") {
        return {
          ...base,
          reason: "crash",
          detail: `the soft CPU met an instruction it does not implement\n${stop.report}`,
        };
      }
      // Yield now and then so the worker's housekeeping runs (console output needs no turn).
      if (performance.now() - lastTurn > 1000) {
        lastTurn = performance.now();
        await new Promise((r) => setImmediate(r));
      }
    }
  }
}

try {
  const result = data.config.engine === "kvm" ? await runKvm() : await runSoft();
  post({ t: "done", result });
} catch (err) {
  const e = err as Error;
  post({
    t: "error",
    message: e.message ?? String(err),
    code: err instanceof VesselError ? err.code : "VM_MACHINE",
    usage: err instanceof VesselError && /^(BOOT_|VM_)/.test(err.code),
  });
}
