import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type TestContext, test } from "node:test";
import { fileURLToPath } from "node:url";
import { guestRamRegions } from "../../src/boot/e820.js";
import { bootLinux } from "../../src/boot/linux_loader.js";
import { cachedGuest } from "../../src/guest/default_guest.js";
import { guestCommandParam, USERSPACE_MARKER_TEXT } from "../../src/guest/init_script.js";
import { GuestMemory } from "../../src/memory/guest_memory.js";
import { DEBUG_EXIT_PORT } from "../../src/memory/layout.js";
import { type QemuResult, qemuMissing, runQemu, tscHint } from "./qemu.js";

/**
 * End-to-end check of src/boot/ with a real Linux before Vessel's engines can run one: QEMU is
 * only the CPU and the chipset. Vessel's loader fills guest memory (kernel, zero page, e820,
 * command line, initrd, ACPI with a DSDT of LNRO0005 devices, MP table); the pieces are placed
 * with QEMU's `-device loader`; a tiny ROM (fixtures/entry_stub.asm) sets the EntryState and jumps.
 * QEMU's own firmware, ACPI tables and Linux loader are not used. The machine is QEMU's microvm
 * with its virtio-mmio transports at 0xfeb00000 + n*0x200, GSI 5 + n (ioapic2=off); our DSDT
 * describes those slots, so Linux finding the virtio-rng device proves the ACPI path that
 * Debian's kernel needs for virtio-mmio.
 */

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
// dist/test/boot -> test/boot/fixtures
const STUB = join(here, "../../../test/boot/fixtures/entry_stub.asm");
const MICROVM_VIRTIO_BASE = 0xfeb00000;

interface DirectBoot {
  arch: "i386" | "amd64";
  /** Shell command run by the guest init. */
  command: string;
  /** ACPI tables (default) or only the MP table, booted with acpi=off. */
  acpi: boolean;
}

/** Loads the default guest with Vessel's loader and runs it on QEMU microvm; undefined = skipped. */
async function directBoot(t: TestContext, o: DirectBoot): Promise<QemuResult | undefined> {
  const qemu = "qemu-system-x86_64";
  const noQemu = qemuMissing(qemu);
  if (noQemu !== undefined) {
    t.skip(noQemu);
    return undefined;
  }
  if (spawnSync("nasm", ["-v"]).error) {
    t.skip("nasm not installed (apt-get install nasm)");
    return undefined;
  }
  const guest = cachedGuest(o.arch);
  if (guest === undefined) {
    t.skip(`no ${o.arch} default guest: run \`node bin/vessel.js guest build --arch ${o.arch}\``);
    return undefined;
  }
  const memSize = 256 * MiB;
  const mem = GuestMemory.shared(guestRamRegions(memSize));
  const loaded = bootLinux(mem, {
    kernel: readFileSync(guest.kernel),
    initrd: readFileSync(guest.initrd),
    cmdline: `${guest.cmdline} ${tscHint()}${o.acpi ? "" : " acpi=off"} ${guestCommandParam(["sh", "-c", o.command])}`,
    memSize,
    cpus: 2,
    // microvm's slot 3 sits on GSI 8, the RTC's line in our DSDT: leave it out (Vessel's own
    // layout puts virtio on GSIs 16-23 for this reason).
    virtioDevices: Array.from({ length: 8 }, (_, i) => ({
      base: MICROVM_VIRTIO_BASE + i * 0x200,
      size: 0x200,
      irq: 5 + i,
    })).filter((d) => d.irq !== 8),
    arch: o.arch === "amd64" ? "x86_64" : "i386",
    acpi: o.acpi,
  });
  const e = loaded.entry;
  const dir = mkdtempSync(join(tmpdir(), "vessel-direct-boot-"));
  try {
    const defs = [
      `-DENTRY=0x${e.rip.toString(16)}`,
      `-DZEROPAGE=0x${e.rsi.toString(16)}`,
      `-DSTACK=0x${e.rsp.toString(16)}`,
      `-DGDT_BASE=0x${e.gdt.base.toString(16)}`,
      `-DGDT_LIMIT=0x${e.gdt.limit.toString(16)}`,
      ...(e.mode === "long64" ? ["-DLONG", `-DCR3=0x${e.cr3.toString(16)}`] : []),
    ];
    const asm = spawnSync("nasm", ["-f", "bin", ...defs, "-o", join(dir, "stub.rom"), STUB], {
      encoding: "utf8",
    });
    assert.equal(asm.status, 0, asm.stderr);
    // Low memory up to the ROM alias at 0xf0000 (zero page, GDT, page tables, cmdline, MP and ACPI tables).
    writeFileSync(join(dir, "low.bin"), mem.read(0, 0xf0000));
    writeFileSync(join(dir, "kernel.bin"), mem.read(loaded.loadAddr, loaded.image.protectedMode.length));
    writeFileSync(join(dir, "initrd.bin"), mem.read(loaded.initrd!.addr, loaded.initrd!.size));
    const loader = (f: string, addr: number): string[] => [
      "-device",
      `loader,file=${join(dir, f)},addr=0x${addr.toString(16)},force-raw=on`,
    ];
    const r = await runQemu(
      [
        qemu,
        ...[
          "-M",
          "microvm,ioapic2=off,acpi=off,pic=on,pit=on,rtc=on",
          "-accel",
          "tcg",
          "-smp",
          "2",
          "-m",
          "256",
        ],
        ...["-bios", join(dir, "stub.rom"), "-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot"],
        ...loader("low.bin", 0),
        ...loader("kernel.bin", loaded.loadAddr),
        ...loader("initrd.bin", loaded.initrd!.addr),
        ...["-device", "virtio-rng-device"],
        ...["-device", `isa-debug-exit,iobase=0x${(DEBUG_EXIT_PORT + 1).toString(16)},iosize=1`],
      ],
      Number(process.env.VESSEL_QEMU_TIMEOUT_MS ?? 180_000),
    );
    t.diagnostic(
      `${o.arch}: loader + boot + command under QEMU TCG took ${r.ms} ms (QEMU exit status ${r.status})`,
    );
    if (process.env.VESSEL_TEST_LOG) writeFileSync(`${process.env.VESSEL_TEST_LOG}.${o.arch}`, r.output);
    return r;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const arch of ["i386", "amd64"] as const) {
  test(`Vessel's loader boots Debian's ${arch} kernel (QEMU microvm as the CPU): ACPI finds virtio-mmio, the command runs`, async (t) => {
    const r = await directBoot(t, {
      arch,
      acpi: true,
      command:
        "ls /sys/bus/virtio/devices; cat /sys/bus/virtio/devices/*/modalias; grep -c processor /proc/cpuinfo; " +
        "dmesg | grep -i -E 'ACPI: (RSDP|XSDT|DSDT|FACP|APIC)' ; head -c 8 /dev/hwrng | wc -c; exit 3",
    });
    if (r === undefined) return;
    const tail = r.output.slice(-4000);
    assert.ok(r.output.includes(USERSPACE_MARKER_TEXT), tail);
    assert.match(r.output, /ACPI: DSDT 0x0*E0100 /, tail);
    assert.match(r.output, /virtio:d00000004v/, tail); // virtio-rng (device id 4) found through ACPI
    assert.match(r.output, /^2\r?$/m, tail); // both CPUs from the MADT
    assert.match(r.output, /rtc_cmos 00:0\d: registered as rtc0/, tail); // the RTC from the DSDT
    assert.match(r.output, /ttyS0 at I\/O 0x3f8/, tail);
    assert.match(r.output, /^8\r?$/m, tail); // 8 bytes from /dev/hwrng
    assert.equal(r.status, (3 << 1) | 1, tail);
  });
}

test("with acpi=off, Debian's i386 kernel takes its CPUs, IOAPIC and IRQ routing from Vessel's MP table", async (t) => {
  const r = await directBoot(t, {
    arch: "i386",
    acpi: false,
    command: "grep -c processor /proc/cpuinfo; grep -E ' (timer|ttyS0)$' /proc/interrupts; exit 5",
  });
  if (r === undefined) return;
  const tail = r.output.slice(-4000);
  assert.match(r.output, /found SMP MP-table at \[mem 0x0009fc00-0x0009fc0f\]/, tail);
  assert.match(r.output, /MPTABLE: OEM ID: VESSEL/, tail);
  assert.match(r.output, /IOAPIC\[0\]: apic_id 2, version \d+, address 0xfec00000, GSI 0-23/, tail);
  assert.match(r.output, /smp: Brought up 1 node, 2 CPUs/, tail);
  assert.match(r.output, /^2\r?$/m, tail);
  assert.match(r.output, /IO-APIC\s+2-edge\s+timer/, tail); // ISA IRQ0 -> pin 2
  assert.match(r.output, /IO-APIC\s+4-edge\s+ttyS0/, tail);
  assert.equal(r.status, (5 << 1) | 1, tail);
});
