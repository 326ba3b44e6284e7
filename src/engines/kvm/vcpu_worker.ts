/**
 * A secondary vCPU's thread (worker_threads). It configures its vCPU, then runs the one run loop
 * with a MailboxClient: every port/MMIO exit is forwarded to the machine thread that owns the
 * devices. When the loop ends it reports the VM event, marks its link exited and kicks the machine.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { CpuidEntry } from "../../sys/kvm_abi.js";
import { type KvmDeviceTransfer, kvmDeviceFor } from "./kvm_device.js";
import { MailboxClient } from "./mailbox.js";
import { runVcpu, type VmEvent } from "./run_loop.js";
import { configureVcpu, KvmVcpu } from "./vcpu.js";
import { VcpuLink } from "./vcpu_link.js";

export interface VcpuWorkerData {
  fd: number;
  id: number;
  mmapSize: number;
  cpuCount: number;
  supportedCpuid: CpuidEntry[];
  link: SharedArrayBuffer;
  ownerLink: SharedArrayBuffer;
  mailbox: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  /** The engine's KVM device when it is not the host's (a test's fake), see kvm_device.ts. */
  kvm?: KvmDeviceTransfer;
}

export type VcpuWorkerMessage =
  | { kind: "ready" }
  | { kind: "exited"; id: number; event: VmEvent }
  | { kind: "error"; id: number; message: string };

const data = workerData as VcpuWorkerData;
const link = new VcpuLink(data.link);
const owner = new VcpuLink(data.ownerLink);
try {
  const vcpu = new KvmVcpu(data.fd, data.id, data.mmapSize, await kvmDeviceFor(data.kvm));
  configureVcpu(vcpu, { supportedCpuid: data.supportedCpuid, cpuCount: data.cpuCount, irqchip: true });
  link.attach(vcpu.runAddressForLink());
  parentPort!.postMessage({ kind: "ready" } satisfies VcpuWorkerMessage);
  const io = new MailboxClient(new Int32Array(data.mailbox), owner, link);
  const event = runVcpu(vcpu, io, new Int32Array(data.counters), link.control);
  // kvm_run stays mapped: other threads may still kick this vCPU (write immediate_exit) until
  // they see it exited; KvmEngine.close() unmaps it.
  parentPort!.postMessage({ kind: "exited", id: data.id, event } satisfies VcpuWorkerMessage);
} catch (err) {
  parentPort!.postMessage({
    kind: "error",
    id: data.id,
    message: err instanceof Error ? err.message : String(err),
  } satisfies VcpuWorkerMessage);
} finally {
  link.markExited();
  owner.kick();
}
