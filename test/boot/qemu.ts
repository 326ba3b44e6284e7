import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

/**
 * QEMU as the reference machine for the boot and guest tests (test/boot/qemu_direct_boot,
 * test/guest/qemu_boot, test/guest/rootfs_boot): runs it, says why it cannot run.
 */

export interface QemuResult {
  /** QEMU's exit status; null when it was killed at the timeout. */
  status: number | null;
  /** stdout and stderr interleaved, as latin1 (serial output may hold any byte). */
  output: string;
  ms: number;
}

/** Runs `args` (QEMU and its arguments), SIGKILLed after `timeoutMs`. */
export function runQemu(args: string[], timeoutMs: number): Promise<QemuResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString("latin1");
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString("latin1");
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (status) => {
      clearTimeout(timer);
      resolve({ status, output, ms: Date.now() - started });
    });
  });
}

/** The reason to skip when the QEMU binary `qemu` does not run; undefined when it does. */
export function qemuMissing(qemu: string): string | undefined {
  return spawnSync(qemu, ["--version"]).error
    ? `${qemu} not installed (apt-get install qemu-system-x86)`
    : undefined;
}

/**
 * Kernel parameter giving the TSC rate ("" when /proc/cpuinfo does not say). microvm has a PIT but
 * no port 0x61 (PC speaker / channel 2 gate), so Linux cannot calibrate the TSC against the PIT,
 * and with hardware-reduced ACPI there is no PM timer or HPET either: it would wait forever for a
 * calibrated LAPIC timer. TCG's TSC runs at the host's TSC rate, so tell the kernel that rate.
 * (Vessel's own machines need port 0x61 channel-2 gating, kvmclock or CPUID 0x15 for the same
 * reason; see src/boot/acpi.ts.)
 */
export function tscHint(): string {
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1];
  return mhz === undefined ? "" : `tsc_early_khz=${Math.round(Number(mhz) * 1000)}`;
}
