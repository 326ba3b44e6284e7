/**
 * Developer harness for profiling the soft engine (not part of the product): boots the cached
 * default i386 guest on the soft CPU in this process (no worker, no virtio), prints the serial
 * console, reports MIPS, and with --profile-after N writes a V8 CPU profile of everything after
 * N instructions to /tmp/soft-after.cpuprofile (open it in Chrome's DevTools). Run after a build:
 *   node dist/bench/soft-profile/boot_profile.js [--technique bt|interp] [--max N] [--cmd CMD]
 *     [--profile-after N] [--apic] [--host-clock] [--no-decompress]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { guestRamRegions } from "../../src/boot/e820.js";
import { loadLinux } from "../../src/boot/linux_loader.js";
import { MmioBus } from "../../src/bus/mmio_bus.js";
import { PortBus } from "../../src/bus/port_bus.js";
import { HostClock } from "../../src/devices/clock.js";
import { DebugExit } from "../../src/devices/debug_exit.js";
import { PcPlatform } from "../../src/devices/pc_platform.js";
import { Uart16550 } from "../../src/devices/uart16550.js";
import { DEFAULT_CMDLINE, guestPaths } from "../../src/guest/default_guest.js";
import { guestCommandParam } from "../../src/guest/init_script.js";
import { GuestMemory } from "../../src/memory/guest_memory.js";
import { InstructionClock } from "../../src/engines/soft/instruction_clock.js";
import { SoftCpu } from "../../src/engines/soft/soft_cpu.js";
import type { SoftTechnique } from "../../src/engines/soft/technique.js";

const args = process.argv.slice(2);
const max = Number(args[args.indexOf("--max") + 1] ?? "0") || 5e9;
const cmd = args.includes("--cmd") ? args[args.indexOf("--cmd") + 1]! : "";
const extra = cmd === "" ? "" : guestCommandParam(["sh", "-c", cmd]);
// The cached guest's files (whatever the manifest format): build it with `vessel guest build --arch i386`.
const guest = guestPaths("i386");
const apic = args.includes("--apic");
const technique = (
  args.includes("--technique") ? args[args.indexOf("--technique") + 1] : "bt"
) as SoftTechnique;
const memSize = 256 * 1024 * 1024;
const memory = GuestMemory.shared(guestRamRegions(memSize));
const entry = loadLinux(memory, {
  kernel: readFileSync(guest.kernel),
  initrd: readFileSync(guest.initrd),
  cmdline: `${DEFAULT_CMDLINE.i386} ${extra}`,
  memSize,
  cpus: 1,
  virtioDevices: [],
  arch: "i386",
  acpi: apic,
  // The VMM decompresses the payload as `vessel vm run` does on the soft engine (--no-decompress: the kernel's own decompressor runs).
  decompress: !args.includes("--no-decompress"),
});
const ports = new PortBus();
const mmio = new MmioBus();
const hostClock = args.includes("--host-clock");
const clock = hostClock ? new HostClock() : new InstructionClock(10);
const platform = new PcPlatform({ clock, apic });
platform.attach(ports, mmio);
const uart = new Uart16550(platform.irqLine(4), (b) =>
  process.stdout.write(typeof b === "number" ? String.fromCharCode(b) : b),
);
ports.register(0x3f8, 8, uart);
let exitStatus: number | undefined;
ports.register(
  0xf4,
  2,
  new DebugExit(clock, (s) => {
    exitStatus = s;
  }),
);
const cpu = new SoftCpu({
  memory,
  technique,
  ports,
  mmio,
  interrupts: platform,
  clock,
  tscHz: platform.tscHz,
  apic,
  platformMsrs: platform,
  nmi: platform,
  poll: () => {
    const now = clock.nowNs();
    if (now >= platform.nextDeadlineNs()) platform.advance(now);
  },
});
cpu.loadEntryState(entry);
if (clock instanceof InstructionClock) clock.attach(cpu.cpu);
const profileAfter = args.includes("--profile-after")
  ? Number(args[args.indexOf("--profile-after") + 1])
  : -1;
const session = new Session();
let profiling = false;
const t0 = performance.now();
const cpu0 = process.cpuUsage();
let last = t0;
let lastInsns = 0;
for (;;) {
  const stop = cpu.run(1_000_000);
  if (profileAfter >= 0 && !profiling && cpu.cpu.instructions >= profileAfter) {
    profiling = true;
    session.connect();
    session.post("Profiler.enable");
    session.post("Profiler.start");
    process.stderr.write(`profiling from ${cpu.cpu.instructions} instructions\n`);
  }
  const now = performance.now();
  if (now - last > 5000) {
    const n = cpu.cpu.instructions;
    process.stderr.write(
      `[${((now - t0) / 1000).toFixed(1)} s] ${((n - lastInsns) / (now - last) / 1000).toFixed(1)} MIPS eip=${(cpu.cpu.eip >>> 0).toString(16)}\n`,
    );
    last = now;
    lastInsns = n;
  }
  if (exitStatus !== undefined) {
    process.stderr.write(`guest exit status ${exitStatus}\n`);
    break;
  }
  if (stop.kind === "halted" && clock instanceof InstructionClock) {
    // Idle: jump virtual time to the next timer deadline instead of waiting for it.
    clock.skipTo(platform.nextDeadlineNs());
    platform.advance(clock.nowNs());
  }
  if (stop.kind === "budget" || stop.kind === "halted") {
    if (cpu.cpu.instructions >= max) {
      process.stderr.write(`instruction limit\n${cpu.dumpState()}\n`);
      break;
    }
    continue;
  }
  process.stderr.write(
    `\nstop: ${stop.kind} ${"reason" in stop ? stop.reason : ""}\n${"report" in stop ? stop.report : ""}\n`,
  );
  break;
}
if (profiling) {
  session.post("Profiler.stop", (err, r) => {
    if (err === null) writeFileSync("/tmp/soft-after.cpuprofile", JSON.stringify(r.profile));
  });
}
const secs = (performance.now() - t0) / 1000;
const used = process.cpuUsage(cpu0);
const cpuSecs = (used.user + used.system) / 1e6;
process.stderr.write(
  `CPU time ${cpuSecs.toFixed(2)} s = ${(cpu.cpu.instructions / cpuSecs / 1e6).toFixed(1)} MIPS per CPU second\n`,
);
process.stderr.write(
  `${cpu.cpu.instructions} instructions in ${secs.toFixed(2)} s = ${(cpu.cpu.instructions / secs / 1e6).toFixed(1)} MIPS decodes=${cpu.cpu.decodes} invalidations=${cpu.cpu.codeInvalidations}\nexceptions ${JSON.stringify(cpu.stats.exceptionsByVector)}\n`,
);
if (cpu.stats.bt !== undefined) {
  const { vmmCalls, ...counts } = cpu.stats.bt;
  process.stderr.write(`bt ${JSON.stringify(counts)}\n`);
}
