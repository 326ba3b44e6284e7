import { spawnSync } from "node:child_process";
import { DEBUG_EXIT_PORT } from "../src/memory/layout.js";

/**
 * Boots a kernel and initramfs in QEMU until the guest's userspace marker: QEMU's isa-debug-exit
 * sits on Vessel's debug-exit port, so QEMU ends at the same write that Vessel times. Returns the
 * wall time in ms, or a sentence saying why there is no figure. Shared by the boot benchmarks.
 */
export function qemuBootToMarker(o: {
  binary: string;
  /** Machine and accelerator arguments, e.g. ["-M", "microvm", "-accel", "kvm", "-cpu", "host"]. */
  machine: string[];
  memMiB: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  timeoutMs: number;
}): number | string {
  if (spawnSync(o.binary, ["--version"]).status !== 0) return `${o.binary} is not installed`;
  const t0 = performance.now();
  const r = spawnSync(
    o.binary,
    [
      ...o.machine,
      "-m",
      String(o.memMiB),
      "-nodefaults",
      "-no-user-config",
      "-nographic",
      "-serial",
      "null",
      "-no-reboot",
      "-device",
      `isa-debug-exit,iobase=0x${DEBUG_EXIT_PORT.toString(16)},iosize=0x1`,
      "-kernel",
      o.kernel,
      "-initrd",
      o.initrd,
      "-append",
      o.cmdline,
    ],
    { timeout: o.timeoutMs },
  );
  const ms = performance.now() - t0;
  // isa-debug-exit ends QEMU with status (value << 1) | 1 at the marker write.
  if (r.status === null || r.status % 2 !== 1) return `QEMU did not reach the marker (status ${r.status})`;
  return ms;
}
