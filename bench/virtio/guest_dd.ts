/**
 * bench/virtio guest_dd: block throughput seen from inside the default i386 guest (Debian's 686
 * kernel, busybox), on Vessel's soft engine (virtio-blk over virtio-mmio) and, side by side in the
 * same run, on `qemu-system-i386 -accel tcg` (virtio-blk-pci) with the same kernel, initramfs and
 * a disk image of the same size. In one boot the guest runs busybox dd with O_DIRECT:
 *
 *   write   dd if=/dev/zero of=/dev/vda bs=1M count=MB oflag=direct
 *   read    dd if=/dev/vda of=/dev/null bs=1M count=MB iflag=direct
 *   read4k  dd if=/dev/vda of=/dev/null bs=4k count=N iflag=direct   (QD1 4 KiB reads)
 *
 * Each step is timed twice: by the guest (busybox `time`, in guest time: on the soft engine that
 * is virtual time, 10 ns per instruction; Debian's busybox dd prints no rate) and by the host (wall time between the marker lines the
 * guest prints around the step, read off the serial console as they arrive).
 *   node dist/bench/virtio/guest_dd.js [MB=32] [--only vessel,qemu]
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureDefaultGuest } from "../../src/guest/default_guest.js";
import { guestCommandParam } from "../../src/guest/init_script.js";
import { DEBUG_EXIT_PORT } from "../../src/memory/layout.js";

const argv = process.argv.slice(2);
const onlyAt = argv.indexOf("--only");
const only = new Set(onlyAt >= 0 ? argv[onlyAt + 1]!.split(",") : ["vessel", "qemu"]);
const MB = Number(argv.find((a, k) => /^\d+$/.test(a) && argv[k - 1] !== "--only") ?? 32);
const COUNT_4K = 2048;
const VESSEL = fileURLToPath(new URL("../../../bin/vessel.js", import.meta.url));

const STEPS = [
  { name: "write", bytes: MB << 20, cmd: `dd if=/dev/zero of=/dev/vda bs=1M count=${MB} oflag=direct` },
  { name: "read", bytes: MB << 20, cmd: `dd if=/dev/vda of=/dev/null bs=1M count=${MB} iflag=direct` },
  {
    name: "read4k",
    bytes: COUNT_4K * 4096,
    cmd: `dd if=/dev/vda of=/dev/null bs=4k count=${COUNT_4K} iflag=direct`,
  },
];
const SCRIPT = STEPS.map(
  (s) => `echo MARK-${s.name}-begin; time ${s.cmd} 2>&1 | grep real; echo MARK-${s.name}-end`,
).join("\n");

interface StepResult {
  name: string;
  hostMBps: number;
  /** From the guest's `time` (its clock); undefined if not printed. */
  guestMBps: number | undefined;
  iops?: number;
}

/** Runs a VMM, stamping each console line as it arrives; returns the step timings. */
function measure(cmd: string, args: string[]): Promise<StepResult[] | string> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    const stamps = new Map<string, number>();
    const lines: string[] = [];
    let pending = "";
    let err = "";
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString();
    });
    child.stdout.on("data", (b: Buffer) => {
      const now = performance.now();
      pending += b.toString().replace(/\r/g, "");
      let nl = pending.indexOf("\n");
      while (nl >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        lines.push(line);
        const m = /MARK-(\S+)/.exec(line);
        if (m !== null) stamps.set(m[1]!, now);
        nl = pending.indexOf("\n");
      }
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 900_000);
    child.on("exit", () => {
      clearTimeout(timer);
      const out: StepResult[] = [];
      for (const s of STEPS) {
        const t0 = stamps.get(`${s.name}-begin`);
        const t1 = stamps.get(`${s.name}-end`);
        if (t0 === undefined || t1 === undefined) {
          resolve(`no result for ${s.name}: ${(err + lines.slice(-20).join("\n")).slice(-2000)}`);
          return;
        }
        const at = lines.findIndex((l) => l.includes(`MARK-${s.name}-begin`));
        // busybox time: "real\t0m 0.14s" (or "1h 2m 3.45s")
        const real = /real\s+(?:(\d+)h\s*)?(\d+)m\s*([\d.]+)s/.exec(
          lines.slice(at + 1).find((l) => /real/.test(l)) ?? "",
        );
        const guestSeconds =
          real === null ? undefined : Number(real[1] ?? 0) * 3600 + Number(real[2]) * 60 + Number(real[3]);
        const seconds = (t1 - t0) / 1000;
        out.push({
          name: s.name,
          hostMBps: s.bytes / 2 ** 20 / seconds,
          guestMBps:
            guestSeconds === undefined || guestSeconds === 0 ? undefined : s.bytes / 2 ** 20 / guestSeconds,
          ...(s.name === "read4k" ? { iops: COUNT_4K / seconds } : {}),
        });
      }
      resolve(out);
    });
  });
}

const guest = ensureDefaultGuest("i386", (m) => console.error(m));
const dir = mkdtempSync(join(tmpdir(), "vessel-bench-virtio-"));
const results: Record<string, StepResult[]> = {};
try {
  const image = join(dir, "disk.img");
  writeFileSync(image, "");
  truncateSync(image, (MB + 16) << 20);
  if (only.has("vessel")) {
    const r = await measure(process.execPath, [
      VESSEL,
      "vm",
      "run",
      "--engine",
      "soft",
      "--disk",
      image,
      "--",
      "sh",
      "-c",
      SCRIPT,
    ]);
    if (typeof r === "string") console.log(`vessel: ${r}`);
    else results.vessel = r;
  }
  if (only.has("qemu")) {
    if (spawnSync("qemu-system-i386", ["--version"]).status !== 0)
      console.log("qemu: qemu-system-i386 is not installed");
    else {
      // Same guest; PCI on (virtio-blk-pci), the rest of Vessel's command line kept.
      const cmdline = `${guest.cmdline.replace("pci=off", "")} ${guestCommandParam(["sh", "-c", SCRIPT])}`;
      const r = await measure("qemu-system-i386", [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        // Only the status port (+1): QEMU ends with the guest's exit status, not at the marker.
        "-device",
        `isa-debug-exit,iobase=0x${(DEBUG_EXIT_PORT + 1).toString(16)},iosize=0x1`,
        "-drive",
        `file=${image},format=raw,if=none,id=d0,cache=none,aio=threads`,
        "-device",
        "virtio-blk-pci,drive=d0",
        "-kernel",
        guest.kernel,
        "-initrd",
        guest.initrd,
        "-append",
        cmdline,
      ]);
      if (typeof r === "string") console.log(`qemu: ${r}`);
      else results.qemu = r;
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

for (const [who, steps] of Object.entries(results)) {
  for (const s of steps) {
    const extra = s.iops === undefined ? "" : `, ${s.iops.toFixed(0)} IOPS`;
    const g = s.guestMBps === undefined ? "?" : `${s.guestMBps.toFixed(2)} MiB/s`;
    console.log(
      `${who.padEnd(7)} ${s.name.padEnd(7)} host wall ${s.hostMBps.toFixed(2)} MiB/s${extra}   guest clock ${g}`,
    );
  }
}
if (results.vessel !== undefined && results.qemu !== undefined) {
  for (const s of results.vessel) {
    const q = results.qemu.find((x) => x.name === s.name);
    if (q !== undefined)
      console.log(`ratio   ${s.name.padEnd(7)} Vessel/QEMU ${(s.hostMBps / q.hostMBps).toFixed(2)}`);
  }
}
