/**
 * Boots the default i386 guest (Debian's 686 kernel and busybox, built by `vessel guest build
 * --arch i386`) on the soft CPU with the PC platform, runs a busybox workload through the init's
 * command parameter, and checks its output: the kernel release, a sha256sum of a file, a shell
 * loop, dd through /dev/zero, and the exit status. Skips when the guest is not built.
 * Time comes from the InstructionClock, so the run is deterministic and independent of host load.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { guestRamRegions } from "../../../src/boot/e820.js";
import { loadLinux } from "../../../src/boot/linux_loader.js";
import { MmioBus } from "../../../src/bus/mmio_bus.js";
import { PortBus } from "../../../src/bus/port_bus.js";
import { DebugExit } from "../../../src/devices/debug_exit.js";
import { PcPlatform } from "../../../src/devices/pc_platform.js";
import { Uart16550 } from "../../../src/devices/uart16550.js";
import { InstructionClock } from "../../../src/engines/soft/instruction_clock.js";
import { SoftCpu } from "../../../src/engines/soft/soft_cpu.js";
import { DEFAULT_CMDLINE, guestPaths } from "../../../src/guest/default_guest.js";
import { guestCommandParam } from "../../../src/guest/init_script.js";
import { GuestMemory } from "../../../src/memory/guest_memory.js";

const WORKLOAD = [
  "uname -r",
  "printf vessel > /tmp/f",
  "sha256sum /tmp/f",
  "i=0; while [ $i -lt 500 ]; do i=$((i+1)); done; echo loop $i",
  "dd if=/dev/zero bs=1024 count=256 2>/dev/null | sha256sum",
  "exit 42",
].join("; ");

test("soft cpu boots Debian's i386 kernel and runs a busybox workload", { timeout: 1_800_000 }, (t) => {
  const guest = guestPaths("i386");
  if (!existsSync(guest.kernel) || !existsSync(guest.initrd)) {
    t.skip("the default i386 guest is not built (node bin/vessel.js guest build --arch i386)");
    return;
  }
  const memSize = 256 * 1024 * 1024;
  const memory = GuestMemory.shared(guestRamRegions(memSize));
  const entry = loadLinux(memory, {
    kernel: readFileSync(guest.kernel),
    initrd: readFileSync(guest.initrd),
    cmdline: `${DEFAULT_CMDLINE.i386} ${guestCommandParam(["sh", "-c", WORKLOAD])}`,
    memSize,
    cpus: 1,
    virtioDevices: [],
    arch: "i386",
    acpi: true,
  });
  const ports = new PortBus();
  const mmio = new MmioBus();
  const clock = new InstructionClock();
  const platform = new PcPlatform({ clock, apic: true });
  platform.attach(ports, mmio);
  let console = "";
  ports.register(
    0x3f8,
    8,
    new Uart16550(platform.irqLine(4), (b) => {
      console += typeof b === "number" ? String.fromCharCode(b) : Buffer.from(b).toString("latin1");
    }),
  );
  let exitStatus: number | undefined;
  ports.register(
    0xf4,
    2,
    new DebugExit(clock, (s) => {
      exitStatus = s;
    }),
  );
  const soft = new SoftCpu({
    memory,
    ports,
    mmio,
    interrupts: platform,
    clock,
    tscHz: platform.tscHz,
    apic: true,
    platformMsrs: platform,
    nmi: platform,
    poll: () => {
      const now = clock.nowNs();
      if (now >= platform.nextDeadlineNs()) platform.advance(now);
    },
  });
  soft.loadEntryState(entry);
  clock.attach(soft.cpu);
  const limit = 6e9;
  while (exitStatus === undefined && soft.cpu.instructions < limit) {
    const stop = soft.run(1_000_000);
    if (stop.kind === "halted") {
      clock.skipTo(platform.nextDeadlineNs());
      platform.advance(clock.nowNs());
    } else if (stop.kind !== "budget") {
      assert.fail(`the soft CPU stopped: ${JSON.stringify(stop)}\n--- console ---\n${console.slice(-3000)}`);
    }
  }
  const tail = `\n--- console ---\n${console.slice(-3000)}`;
  assert.equal(exitStatus, 42, `guest exit status${tail}`);
  const sha = (data: Buffer) => createHash("sha256").update(data).digest("hex");
  assert.match(console, /6\.1\.\d+-\d+-686/, `uname -r${tail}`);
  assert.ok(console.includes(`${sha(Buffer.from("vessel"))}  /tmp/f`), `sha256sum of a file${tail}`);
  assert.ok(console.includes("loop 500"), `shell loop${tail}`);
  assert.ok(console.includes(`${sha(Buffer.alloc(256 * 1024))}  -`), `dd through /dev/zero${tail}`);
  t.diagnostic(`${soft.cpu.instructions} instructions`);
});
