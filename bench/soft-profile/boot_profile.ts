/**
 * Developer harness (not part of the product): boots the cached default i386 guest on the soft
 * CPU with the devices that exist, prints the serial console, and reports MIPS. Run after a build:
 *   node dist/src/engines/soft/dev_boot.js [--max N] [--trace-from N]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { guestRamRegions } from "../../boot/e820.js";
import { loadLinux } from "../../boot/linux_loader.js";
import { MmioBus } from "../../bus/mmio_bus.js";
import { PortBus } from "../../bus/port_bus.js";
import { HostClock } from "../../devices/clock.js";
import { DebugExit } from "../../devices/debug_exit.js";
import { PcPlatform } from "../../devices/pc_platform.js";
import { Uart16550 } from "../../devices/uart16550.js";
import { DEFAULT_CMDLINE, guestPaths } from "../../guest/default_guest.js";
import { guestCommandParam } from "../../guest/init_script.js";
import { GuestMemory } from "../../memory/guest_memory.js";
import { InstructionClock } from "./instruction_clock.js";
import { SoftCpu } from "./soft_cpu.js";

const args = process.argv.slice(2);
const max = Number(args[args.indexOf("--max") + 1] ?? "0") || 5e9;
const cmd = args.includes("--cmd") ? args[args.indexOf("--cmd") + 1]! : "";
const extra = cmd === "" ? "" : guestCommandParam(["sh", "-c", cmd]);
// The cached guest's files (whatever the manifest format): build it with `vessel guest build --arch i386`.
const guest = guestPaths("i386");
const apic = args.includes("--apic");
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
