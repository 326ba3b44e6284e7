import assert from "node:assert/strict";
import { test } from "node:test";
import type { Device } from "../../../src/bus/device.js";
import { NO_IRQ } from "../../../src/bus/device.js";
import { MmioBus } from "../../../src/bus/mmio_bus.js";
import { PortBus } from "../../../src/bus/port_bus.js";
import { Uart16550 } from "../../../src/devices/uart16550.js";
import { BusIo } from "../../../src/engines/kvm/bus_io.js";
import { KvmEngine } from "../../../src/engines/kvm/engine.js";
import { describeVmEvent } from "../../../src/engines/kvm/run_loop.js";
import { KVM_IDENTITY_MAP_START, KVM_TSS_START } from "../../../src/memory/layout.js";
import {
  KVM_CAP_IRQCHIP,
  KVM_EXIT_DEBUG,
  KVM_EXIT_INTR,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_INTERNAL_ERROR_EMULATION,
} from "../../../src/sys/kvm_abi.js";
import { FAKE_VENDOR, FakeKvm, type FakeExit, type FakeKvmOptions } from "./fake_kvm.js";
import { flat32Entry, RecordingIo } from "./helpers.js";

/**
 * The KVM engine's own code (system.ts, vm.ts, vcpu.ts, run_loop.ts, bus_io.ts) on the scripted
 * FakeKvm: these run on every host, /dev/kvm or not. payloads.test.ts runs the same paths on the
 * real device where there is one.
 */

function fakeMachine(
  scripts: Record<number, FakeExit[]>,
  opts: { irqchip?: boolean; cpus?: number; fake?: Partial<FakeKvmOptions> } = {},
): { engine: KvmEngine; fake: FakeKvm } {
  const fake = new FakeKvm({ ...opts.fake, scripts });
  const engine = KvmEngine.create({
    memoryBytes: 16 << 20,
    cpus: opts.cpus ?? 1,
    irqchip: opts.irqchip ?? false,
    kvm: fake,
  });
  return { engine, fake };
}

/** A 16-byte MMIO register file that records what it was asked. */
class ScratchRegisters implements Device {
  readonly name = "scratch";
  readonly regs = new DataView(new ArrayBuffer(16));
  readonly log: string[] = [];
  read(offset: number, size: 1 | 2 | 4): number {
    this.log.push(`read ${offset}/${size}`);
    return size === 1
      ? this.regs.getUint8(offset)
      : size === 2
        ? this.regs.getUint16(offset, true)
        : this.regs.getUint32(offset, true);
  }
  write(offset: number, size: 1 | 2 | 4, value: number): void {
    this.log.push(`write ${offset}/${size}=${value.toString(16)}`);
    if (size === 1) this.regs.setUint8(offset, value);
    else if (size === 2) this.regs.setUint16(offset, value, true);
    else this.regs.setUint32(offset, value, true);
  }
}

test("fake KVM: port and MMIO exits reach the IoHandler in order, IN and MMIO-read answers land in kvm_run, HLT ends the run", async () => {
  // The exits of test/engines/kvm/payloads/io_mmio.asm, as hardware KVM delivers them.
  const { engine, fake } = fakeMachine({
    0: [
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x48] },
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x69] },
      { exit: "io_in", port: 0x510, size: 4, expect: [0xcafef00d] },
      { exit: "io_out", port: 0x511, size: 2, data: [0xbeef] },
      { exit: "mmio_write", addr: 0xd0000000, data: [0x78, 0x56, 0x34, 0x12] },
      { exit: "mmio_read", addr: 0xd0000010, len: 4, expect: [0x0d, 0xd0, 0x0d, 0x60] },
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x61, 0x62, 0x63] }, // rep outsb: one exit, count 3
      { exit: "hlt" },
    ],
  });
  try {
    const io = new RecordingIo();
    io.answers.set(0x510, 0xcafef00d);
    io.answers.set(0xd0000010, 0x600dd00d);
    const r = await engine.run(flat32Entry(0x1000), io);
    assert.equal(r.event.kind, "hlt");
    assert.equal(r.cpu, 0);
    assert.equal(r.timedOut, false);
    assert.deepEqual(io.log, [
      "out 3f8/1=48",
      "out 3f8/1=69",
      "in 510/4",
      "out 511/2=beef",
      "mmio write d0000000/4=12345678",
      "mmio read d0000010/4",
      "out 3f8/1=61",
      "out 3f8/1=62",
      "out 3f8/1=63",
    ]);
    // Exit counts by reason, as `vessel vm run --stats` prints them.
    assert.deepEqual(r.exits, { io: 5, mmio: 2, hlt: 1 });
    assert.deepEqual(engine.exitCounts(), r.exits);
    // What the guest would have received: read back from kvm_run on the next KVM_RUN.
    const readBacks = fake
      .callsOf("vcpu0")
      .filter((c) => c.name === "KVM_RUN")
      .flatMap((c) => {
        const a = c.arg as { readBack?: number[] };
        return a.readBack === undefined ? [] : [a.readBack];
      });
    assert.deepEqual(readBacks, [[0xcafef00d], [0x0d, 0xd0, 0x0d, 0x60]]);
    assert.equal(fake.stepsTaken(0), 8);
  } finally {
    engine.close();
  }
  assert.deepEqual(fake.openFds(), [], "every fd the engine opened is closed");
});

test("fake KVM: through BusIo the UART and an MMIO device see the accesses, unclaimed ports read all ones, and accesses are counted by device", async () => {
  const { engine } = fakeMachine({
    0: [
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x48] },
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x69] },
      { exit: "io_in", port: 0x3fd, size: 1, expect: [0x60] }, // LSR: THRE | TEMT
      { exit: "mmio_write", addr: 0xd0000004, data: [0xef, 0xbe, 0xad, 0xde] },
      { exit: "mmio_read", addr: 0xd0000004, len: 2, expect: [0xef, 0xbe] },
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x6f, 0x6b, 0x0a] },
      { exit: "io_in", port: 0x99, size: 2, expect: [0xffff] },
      { exit: "hlt" },
    ],
  });
  try {
    const ports = new PortBus();
    const out: number[] = [];
    ports.register(
      0x3f8,
      8,
      new Uart16550(NO_IRQ, (b) => (typeof b === "number" ? out.push(b) : out.push(...b))),
    );
    const mmio = new MmioBus();
    const scratch = new ScratchRegisters();
    mmio.register(0xd0000000, 16, scratch);
    const busIo = new BusIo(ports, mmio);
    const r = await engine.run(flat32Entry(0x1000), busIo);
    assert.equal(r.event.kind, "hlt");
    assert.equal(Buffer.from(out).toString("latin1"), "Hiok\n");
    assert.deepEqual(scratch.log, ["write 4/4=deadbeef", "read 4/2"]);
    assert.equal(ports.unclaimedReads, 1);
    assert.deepEqual(r.exits, { io: 5, mmio: 2, hlt: 1 });
    assert.deepEqual(busIo.busiest(), [
      { what: "uart16550 (ports)", count: 6 },
      { what: "scratch (MMIO)", count: 2 },
      { what: "port 0x99 (unclaimed)", count: 1 },
    ]);
  } finally {
    engine.close();
  }
});

test("fake KVM: an 8-byte MMIO access reaches devices as two 4-byte ones, a 3-byte one byte by byte", async () => {
  const { engine, fake } = fakeMachine({
    0: [
      { exit: "mmio_write", addr: 0xd0000000, data: [1, 2, 3, 4, 5, 6, 7, 8] },
      { exit: "mmio_read", addr: 0xd0000000, len: 8, expect: [1, 2, 3, 4, 5, 6, 7, 8] },
      { exit: "mmio_write", addr: 0xd0000008, data: [0xaa, 0xbb, 0xcc] },
      { exit: "hlt" },
    ],
  });
  try {
    const mmio = new MmioBus();
    const scratch = new ScratchRegisters();
    mmio.register(0xd0000000, 16, scratch);
    const r = await engine.run(flat32Entry(0x1000), new BusIo(new PortBus(), mmio));
    assert.equal(r.event.kind, "hlt");
    assert.deepEqual(scratch.log, [
      "write 0/4=4030201",
      "write 4/4=8070605",
      "read 0/4",
      "read 4/4",
      "write 8/1=aa",
      "write 9/1=bb",
      "write 10/1=cc",
    ]);
    assert.equal(fake.stepsTaken(0), 4);
  } finally {
    engine.close();
  }
});

const ENDINGS: {
  what: string;
  exit: FakeExit;
  check: (text: string, event: Record<string, unknown>) => void;
  counted: string;
}[] = [
  {
    what: "KVM_EXIT_SHUTDOWN (triple fault) is a shutdown event with a register dump",
    exit: { exit: "shutdown" },
    check: (text, e) => {
      assert.equal(e.kind, "shutdown");
      assert.match(text, /^the guest shut down \(triple fault\)/);
    },
    counted: "shutdown",
  },
  {
    what: "KVM_EXIT_INTERNAL_ERROR carries its suberror and data",
    exit: { exit: "internal_error", suberror: KVM_INTERNAL_ERROR_EMULATION, data: [0x0f0b, 0x1000] },
    check: (text, e) => {
      assert.equal(e.kind, "internal_error");
      assert.equal(e.suberror, KVM_INTERNAL_ERROR_EMULATION);
      assert.deepEqual(e.data, [0x0f0bn, 0x1000n]);
      assert.match(text, /^KVM internal error, suberror 1 \[0xf0b, 0x1000\]/);
    },
    counted: "internal_error",
  },
  {
    what: "KVM_EXIT_FAIL_ENTRY carries the hardware reason and CPU",
    exit: { exit: "fail_entry", reason: 0x80000021, cpu: 3 },
    check: (text, e) => {
      assert.equal(e.kind, "fail_entry");
      assert.equal(e.reason, 0x80000021n);
      assert.equal(e.cpu, 3);
      assert.match(text, /^VM entry failed on cpu 3: hardware reason 0x80000021/);
    },
    counted: "fail_entry",
  },
  {
    what: "KVM_EXIT_SYSTEM_EVENT reset is a system event",
    exit: { exit: "system_event", type: 2 },
    check: (text, e) => {
      assert.deepEqual(e, { kind: "system_event", type: "reset", code: 2 });
      assert.equal(text, "the guest requested reset (KVM system event 2)");
    },
    counted: "system_event",
  },
  {
    what: "an exit the engine does not handle (KVM_EXIT_DEBUG) is an unhandled_exit event, named",
    exit: { exit: "reason", reason: KVM_EXIT_DEBUG },
    check: (text, e) => {
      assert.equal(e.kind, "unhandled_exit");
      assert.equal(e.name, "debug");
      assert.match(text, /^unhandled VM exit debug \(4\)/);
    },
    counted: "debug",
  },
  {
    what: "an unknown exit reason (99) is an unhandled_exit event, counted as unknown",
    exit: { exit: "reason", reason: 99 },
    check: (text, e) => {
      assert.equal(e.kind, "unhandled_exit");
      assert.equal(e.reason, 99);
      assert.equal(e.name, "reason 99");
      assert.match(text, /^unhandled VM exit reason 99 \(99\)/);
    },
    counted: "unknown",
  },
];

for (const end of ENDINGS) {
  test(`fake KVM: ${end.what}`, async () => {
    const { engine } = fakeMachine({ 0: [{ exit: "io_out", port: 0x3f8, size: 1, data: [0x2e] }, end.exit] });
    try {
      const r = await engine.run(flat32Entry(0x1000), new RecordingIo());
      const text = describeVmEvent(r.event);
      end.check(text, r.event as unknown as Record<string, unknown>);
      if ("dump" in r.event) {
        // The dump reads the registers back (KVM_GET_REGS / GET_SREGS): what KVM_SET_REGS loaded.
        assert.match(r.event.dump, /rip=0000000000001000/);
        assert.match(r.event.dump, /cs=0008 base=0000000000000000 limit=ffffffff/);
        assert.ok(text.endsWith(r.event.dump));
      }
      assert.deepEqual(r.exits, { io: 1, [end.counted]: 1 });
    } finally {
      engine.close();
    }
  });
}

test("fake KVM: the engine sets up the VM, then CPUID, MSRs, FPU, segments and registers before the first KVM_RUN", async () => {
  const { engine, fake } = fakeMachine({ 0: [{ exit: "hlt" }] }, { irqchip: true });
  try {
    const r = await engine.run(flat32Entry(0x1000, 0x7f000), new RecordingIo());
    assert.equal(r.event.kind, "hlt");
  } finally {
    engine.close();
  }
  const names = (fd: string) => fake.callsOf(fd).map((c) => c.name);
  assert.deepEqual(names("system"), [
    "KVM_GET_API_VERSION",
    "KVM_CHECK_EXTENSION",
    "KVM_CHECK_EXTENSION",
    "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_CHECK_EXTENSION",
    "KVM_CREATE_VM",
    "KVM_GET_SUPPORTED_CPUID",
  ]);
  const vm = fake.callsOf("vm");
  assert.deepEqual(
    vm.map((c) => [c.name, c.arg]),
    [
      ["KVM_SET_IDENTITY_MAP_ADDR", { addr: `0x${KVM_IDENTITY_MAP_START.toString(16)}` }],
      ["KVM_SET_TSS_ADDR", { addr: `0x${KVM_TSS_START.toString(16)}` }],
      ["KVM_CREATE_IRQCHIP", undefined],
      ["KVM_CREATE_PIT2", undefined],
      ["KVM_SET_USER_MEMORY_REGION", { slot: 0, guestPhys: "0x0", size: "0x1000000" }],
      ["KVM_CREATE_VCPU", { id: 0 }],
    ],
  );
  assert.deepEqual(names("vcpu0"), [
    "KVM_SET_CPUID2",
    "KVM_SET_MSRS",
    "KVM_SET_FPU",
    "KVM_GET_LAPIC",
    "KVM_SET_LAPIC",
    "KVM_GET_SREGS",
    "KVM_SET_SREGS",
    "KVM_SET_REGS",
    "KVM_SET_MP_STATE",
    "KVM_RUN",
  ]);
  const arg = (name: string) => fake.callsOf("vcpu0").find((c) => c.name === name)?.arg;
  // The host's supported CPUID, passed on with the hypervisor bit and this vCPU's APIC id (0).
  const cpuid = (
    arg("KVM_SET_CPUID2") as { entries: { function: number; ebx: number; ecx: number; edx: number }[] }
  ).entries;
  assert.deepEqual(
    cpuid.map((e) => e.function),
    [0, 1, 0xb],
  );
  const leaf0 = cpuid[0]!;
  const vendor = Buffer.alloc(12);
  vendor.writeUInt32LE(leaf0.ebx, 0);
  vendor.writeUInt32LE(leaf0.edx, 4);
  vendor.writeUInt32LE(leaf0.ecx, 8);
  assert.equal(vendor.toString("latin1"), FAKE_VENDOR);
  assert.equal(cpuid[1]!.ecx >>> 31, 1, "CPUID.1:ECX[31] hypervisor present");
  assert.equal(cpuid[1]!.ebx >>> 24, 0, "CPUID.1:EBX[31:24] APIC id");
  assert.deepEqual(arg("KVM_SET_REGS"), { rip: "0x1000", rsp: "0x7f000", rsi: "0x0", rflags: "0x2" });
  assert.deepEqual(arg("KVM_SET_SREGS"), { cs: "0x8", cr0: "0x11", cr3: "0x0", cr4: "0x0", efer: "0x0" });
  // LINT0 = ExtINT (mode 7), LINT1 = NMI (mode 4); the boot CPU is RUNNABLE.
  const lapic = arg("KVM_SET_LAPIC") as { lvt0: string; lvt1: string };
  assert.equal((Number(lapic.lvt0) >> 8) & 7, 7);
  assert.equal((Number(lapic.lvt1) >> 8) & 7, 4);
  assert.deepEqual(arg("KVM_SET_MP_STATE"), { state: 0 });
  const msrs = (arg("KVM_SET_MSRS") as { msrs: { index: string }[] }).msrs.map((m) => m.index);
  assert.ok(msrs.includes("0x2ff") && msrs.includes("0x1a0"), `boot MSRs: ${msrs}`);
  assert.ok(
    fake.calls().every((c) => c.thread === 0),
    "one vCPU: everything on the machine thread",
  );
});

test("fake KVM: an interrupt line is KVM_IRQ_LINE on its GSI", async () => {
  const { engine, fake } = fakeMachine({ 0: [] }, { irqchip: true });
  try {
    const line = engine.irqLine(4);
    line.setLevel(true);
    line.setLevel(false);
  } finally {
    engine.close();
  }
  assert.deepEqual(
    fake
      .callsOf("vm")
      .filter((c) => c.name === "KVM_IRQ_LINE")
      .map((c) => c.arg),
    [
      { gsi: 4, level: 1 },
      { gsi: 4, level: 0 },
    ],
  );
});

test("fake KVM: a device asking to stop ends the run at that exit, before the next KVM_RUN", async () => {
  const { engine, fake } = fakeMachine({
    0: [{ exit: "io_out", port: 0xf5, size: 1, data: [0] }, { exit: "spin" }],
  });
  try {
    const io = new RecordingIo();
    io.onPortWrite = (port) => {
      if (port === 0xf5) engine.requestStop();
    };
    const r = await engine.run(flat32Entry(0x1000), io);
    assert.deepEqual(r.event, { kind: "stopped" });
    assert.equal(r.timedOut, false);
    assert.equal(fake.callsOf("vcpu0").filter((c) => c.name === "KVM_RUN").length, 1);
  } finally {
    engine.close();
  }
});

test("fake KVM: a wrong answer to a port IN is caught by the fake's check and fails the run", async () => {
  const { engine } = fakeMachine({
    0: [{ exit: "io_in", port: 0x510, size: 1, expect: [0x42] }, { exit: "hlt" }],
  });
  try {
    await assert.rejects(
      engine.run(flat32Entry(0x1000), new RecordingIo()),
      /read \[0xff\] from port 0x510, its script expected \[0x42\]/,
    );
  } finally {
    engine.close();
  }
});

test("fake KVM: opening KVM says what is wrong and closes what it opened", () => {
  const cases: {
    fake: Partial<FakeKvmOptions>;
    kvmPath?: string;
    cpus?: number;
    code: string;
    message: RegExp;
  }[] = [
    {
      fake: {},
      kvmPath: "/nonexistent/kvm",
      code: "KVM_MISSING",
      message: /^no \/nonexistent\/kvm: this host has no KVM/,
    },
    { fake: { openErrno: 13 }, code: "KVM_PERMISSION", message: /add your user to the "kvm" group/ },
    {
      fake: { apiVersion: 11 },
      code: "KVM_API_VERSION",
      message: /speaks KVM API version 11, Vessel needs 12/,
    },
    { fake: { caps: { [KVM_CAP_IRQCHIP]: 0 } }, code: "KVM_CAPABILITY", message: /lacks KVM_CAP_IRQCHIP/ },
    {
      fake: { maxVcpus: 2 },
      cpus: 3,
      code: "KVM_CPUS",
      message: /--cpus 3 is more than this host's KVM allows \(2\)/,
    },
  ];
  for (const c of cases) {
    const fake = new FakeKvm({ ...c.fake, scripts: {} });
    assert.throws(
      () =>
        KvmEngine.create({
          memoryBytes: 1 << 20,
          cpus: c.cpus ?? 1,
          kvm: fake,
          ...(c.kvmPath === undefined ? {} : { kvmPath: c.kvmPath }),
        }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, c.code);
        assert.match(err.message, c.message);
        return true;
      },
    );
    assert.deepEqual(fake.openFds(), [], `${c.code}: no fd left open`);
  }
});

test("fake KVM: exits that need nothing from the VMM (IRQ window, KVM_EXIT_INTR, EAGAIN from KVM_RUN) are counted and the guest goes on", async () => {
  const { engine, fake } = fakeMachine({
    0: [
      { exit: "reason", reason: KVM_EXIT_IRQ_WINDOW_OPEN },
      { exit: "reason", reason: KVM_EXIT_INTR },
      { exit: "error", errno: 11 }, // EAGAIN: counted with the kicks, as intr
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x2e] },
      { exit: "hlt" },
    ],
  });
  try {
    const io = new RecordingIo();
    const r = await engine.run(flat32Entry(0x1000), io);
    assert.equal(r.event.kind, "hlt");
    assert.deepEqual(io.log, ["out 3f8/1=2e"]);
    assert.deepEqual(r.exits, { io: 1, hlt: 1, irq_window_open: 1, intr: 2 });
    assert.equal(fake.stepsTaken(0), 5);
  } finally {
    engine.close();
  }
});

test("fake KVM: pausing the machine's link stops the vCPU loop outside KVM_RUN until it is resumed", async () => {
  const { engine, fake } = fakeMachine({
    0: [
      { exit: "io_out", port: 0xf4, size: 1, data: [1] },
      { exit: "io_out", port: 0x3f8, size: 1, data: [0x2e] },
      { exit: "hlt" },
    ],
  });
  try {
    const io = new RecordingIo();
    const seen: string[] = [];
    io.onPortWrite = (port) => {
      seen.push(`out ${port.toString(16)}`);
      if (port === 0xf4) engine.machineLink.pause();
    };
    const r = await engine.run(flat32Entry(0x1000), io, {
      onPause: (paused) => {
        seen.push(`paused ${paused} after ${fake.stepsTaken(0)} exits`);
        // This thread is the one waiting: resume from here (a console or the API does it from another).
        if (paused) engine.machineLink.resume();
      },
    });
    assert.equal(r.event.kind, "hlt");
    assert.deepEqual(seen, ["out f4", "paused true after 1 exits", "paused false after 1 exits", "out 3f8"]);
  } finally {
    engine.close();
  }
});
