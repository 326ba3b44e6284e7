/**
 * The paravirtual side of a machine, for the machine worker and the `--stats` report: the virtio
 * consoles' output wired to the VM's console output, per-device virtio counters (transport
 * notifies and interrupts, the device's own metrics), and the soft engine's KVM PV interface
 * counters (hypercalls by number, kvmclock MSR writes). Results are plain data (they cross a
 * thread boundary in a VmResult).
 */
import { ConsoleDevice } from "../devices/virtio/console/device.js";
import type { MmioTransport } from "../devices/virtio/transport_mmio.js";
import type { ParavirtStats } from "../engines/soft/paravirt.js";

export interface VirtioDeviceReport {
  name: string;
  notifies: number;
  interrupts: number;
  guestErrors: number;
  /** The device's counters, zeros left out. */
  metrics: Record<string, number>;
}

export interface ParavirtReport {
  /** Hypercalls by KVM_HC_* number. */
  hypercalls: Record<string, number>;
  kvmclockWrites: number;
}

/** KVM_HC_* names (include/uapi/linux/kvm_para.h) for the report. */
const HYPERCALL_NAMES: Record<number, string> = {
  1: "VAPIC_POLL_IRQ",
  3: "FEATURES",
  5: "KICK_CPU",
  9: "CLOCK_PAIRING",
  10: "SEND_IPI",
  11: "SCHED_YIELD",
  12: "MAP_GPA_RANGE",
};

/** Sends what the guest writes on every virtio console (hvc0, ...) to the VM's console output. */
export function connectVirtioConsoles(
  transports: readonly MmioTransport[],
  output: (bytes: Uint8Array) => void,
): ConsoleDevice[] {
  const consoles: ConsoleDevice[] = [];
  for (const t of transports) {
    if (t.device instanceof ConsoleDevice) {
      t.device.onOutput = output;
      consoles.push(t.device);
    }
  }
  return consoles;
}

export function virtioReport(transports: readonly MmioTransport[]): VirtioDeviceReport[] {
  return transports.map((t) => ({
    name: t.device.name,
    notifies: t.stats.notifies,
    interrupts: t.stats.interrupts,
    guestErrors: t.stats.guestErrors,
    metrics: Object.fromEntries(Object.entries(t.device.metrics).filter(([, v]) => v !== 0)),
  }));
}

export function paravirtReport(stats: ParavirtStats): ParavirtReport {
  const hypercalls: Record<string, number> = {};
  for (const [nr, n] of stats.hypercalls) hypercalls[HYPERCALL_NAMES[nr] ?? `#${nr}`] = n;
  return { hypercalls, kvmclockWrites: stats.systemTimeWrites + stats.wallClockWrites };
}

/** The --stats lines for the paravirtual devices and the PV CPU interface. */
export function formatParavirtStats(virtio?: readonly VirtioDeviceReport[], pv?: ParavirtReport): string[] {
  const lines: string[] = [];
  if (pv !== undefined) {
    const calls = Object.entries(pv.hypercalls);
    const total = calls.reduce((a, [, n]) => a + n, 0);
    const detail = calls.length === 0 ? "" : ` (${calls.map(([k, n]) => `${k} ${n}`).join(", ")})`;
    lines.push(`paravirt      kvmclock MSR writes ${pv.kvmclockWrites}, hypercalls ${total}${detail}`);
  }
  for (const d of virtio ?? []) {
    const m = Object.entries(d.metrics)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
    lines.push(
      `virtio        ${d.name}: ${d.notifies} notifies, ${d.interrupts} interrupts${d.guestErrors > 0 ? `, ${d.guestErrors} guest errors` : ""}${m === "" ? "" : `; ${m}`}`,
    );
  }
  return lines;
}
