import assert from "node:assert/strict";
import { test } from "node:test";
import { KvmEngine } from "../../../src/engines/kvm/engine.js";
import { POST_PORT } from "../../../src/engines/kvm/mailbox.js";
import { KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED } from "../../../src/sys/kvm_abi.js";
import { SysError } from "../../../src/sys/sys_error.js";
import { type FakeExit, FakeKvm } from "./fake_kvm.js";
import { flat32Entry, RecordingIo } from "./helpers.js";

/**
 * The KVM engine's threads on the scripted FakeKvm: secondary vCPUs in their worker threads
 * (vcpu_worker.ts rebuilds the fake from its SharedArrayBuffers), their I/O through the mailbox to
 * the machine thread, kicks through vcpu_link.ts (immediate_exit in the kvm_run page, then a
 * signal), and the watchdog thread. No /dev/kvm needed; payloads.test.ts does this on hardware.
 */

function fakeMachine(
  scripts: Record<number, FakeExit[]>,
  cpus: number,
): { engine: KvmEngine; fake: FakeKvm } {
  const fake = new FakeKvm({ scripts });
  const engine = KvmEngine.create({ memoryBytes: 16 << 20, cpus, irqchip: true, kvm: fake });
  return { engine, fake };
}

const runs = (fake: FakeKvm, fd: string) =>
  fake
    .callsOf(fd)
    .filter((c) => c.name === "KVM_RUN")
    .map((c) => (c.arg as { exit: string }).exit);

test("fake KVM: a secondary vCPU runs in its own thread and its port and MMIO exits are served by the machine thread through the mailbox", async () => {
  // The boot CPU spins in the guest (no exits): only the mailbox kicks bring it out of KVM_RUN.
  const { engine, fake } = fakeMachine(
    {
      0: [{ exit: "spin" }],
      1: [
        { exit: "io_out", port: 0x3f8, size: 1, data: [0x41] },
        { exit: "io_in", port: 0x3fd, size: 1, expect: [0x60] },
        { exit: "io_out", port: POST_PORT, size: 1, data: [0] }, // io_delay: answered in the vCPU thread
        { exit: "mmio_write", addr: 0xd0000000, data: [1, 2, 3, 4] },
        { exit: "mmio_read", addr: 0xd0000010, len: 4, expect: [0x0d, 0xd0, 0x0d, 0x60] },
        { exit: "shutdown" },
      ],
    },
    2,
  );
  try {
    const io = new RecordingIo();
    io.answers.set(0x3fd, 0x60);
    io.answers.set(0xd0000010, 0x600dd00d);
    const r = await engine.run(flat32Entry(0x1000), io);
    // The run ends with the secondary's event; the boot CPU was stopped because it exited.
    assert.equal(r.cpu, 1);
    assert.equal(r.event.kind, "shutdown", JSON.stringify(r.event));
    assert.deepEqual(
      r.cpuEvents.map((e) => e.kind),
      ["stopped", "shutdown"],
    );
    assert.equal(r.timedOut, false);
    assert.deepEqual(io.log, [
      "out 3f8/1=41",
      "in 3fd/1",
      "mmio write d0000000/4=4030201",
      "mmio read d0000010/4",
    ]);
    // Counted over both vCPUs: vCPU 1's 3 port and 2 MMIO exits and its shutdown; vCPU 0 exits
    // only when kicked (EINTR, counted as intr).
    const { intr, ...exits } = r.exits;
    assert.deepEqual(exits, { io: 3, mmio: 2, shutdown: 1 });
    assert.ok((intr ?? 0) >= 1, `the boot vCPU was kicked out of KVM_RUN: ${JSON.stringify(r.exits)}`);
    assert.equal(fake.stepsTaken(1), 6);
    assert.ok(runs(fake, "vcpu0").every((e) => e === "spin" || e === "EINTR"));
  } finally {
    engine.close();
  }
  // Both vCPUs were created by the machine thread (VM ioctls), vCPU 1 first; vCPU 1 was set up
  // and run from another thread, as one that starts on INIT/SIPI (no registers, UNINITIALIZED).
  const creates = fake.callsOf("vm").filter((c) => c.name === "KVM_CREATE_VCPU");
  assert.deepEqual(
    creates.map((c) => [c.arg, c.thread]),
    [
      [{ id: 1 }, 0],
      [{ id: 0 }, 0],
    ],
  );
  const vcpu1 = fake.callsOf("vcpu1");
  assert.ok(
    vcpu1.length > 0 && vcpu1.every((c) => c.thread !== 0),
    "vCPU 1 ioctls come from its worker thread",
  );
  assert.ok(!vcpu1.some((c) => c.name === "KVM_SET_REGS"));
  assert.deepEqual(vcpu1.find((c) => c.name === "KVM_SET_MP_STATE")?.arg, {
    state: KVM_MP_STATE_UNINITIALIZED,
  });
  assert.deepEqual(fake.callsOf("vcpu0").find((c) => c.name === "KVM_SET_MP_STATE")?.arg, {
    state: KVM_MP_STATE_RUNNABLE,
  });
  // Each vCPU's CPUID names itself: CPUID.1:EBX[31:24] APIC id, [23:16] 2 logical CPUs, EDX.HTT.
  for (const [fd, apicId] of [
    ["vcpu0", 0],
    ["vcpu1", 1],
  ] as const) {
    const { entries } = fake.argOf(fd, "KVM_SET_CPUID2") as {
      entries: { function: number; ebx: number; ecx: number; edx: number }[];
    };
    const leaf1 = entries.find((e) => e.function === 1)!;
    assert.equal(leaf1.ebx >>> 24, apicId, `${fd}: APIC id`);
    assert.equal((leaf1.ebx >>> 16) & 0xff, 2, `${fd}: logical CPUs`);
    assert.equal((leaf1.edx >>> 28) & 1, 1, `${fd}: HTT`);
    assert.equal(entries.find((e) => e.function === 0xb)!.edx, apicId, `${fd}: x2APIC id in leaf 0xb`);
  }
  assert.deepEqual(fake.openFds(), []);
});

test("fake KVM: the watchdog kicks a vCPU stuck in KVM_RUN and the run ends as timed out", async () => {
  const { engine, fake } = fakeMachine(
    { 0: [{ exit: "io_out", port: 0x3f8, size: 1, data: [0x2e] }, { exit: "spin" }] },
    1,
  );
  try {
    const io = new RecordingIo();
    const r = await engine.run(flat32Entry(0x1000), io, { timeoutMs: 50 });
    assert.deepEqual(r.event, { kind: "stopped" });
    assert.equal(r.timedOut, true);
    assert.deepEqual(io.log, ["out 3f8/1=2e"]);
    assert.equal(r.exits.io, 1);
    assert.ok((r.exits.intr ?? 0) >= 1, JSON.stringify(r.exits));
    assert.deepEqual(runs(fake, "vcpu0").slice(0, 2), ["io_out", "spin"]);
  } finally {
    engine.close();
  }
});

test("fake KVM: when the watchdog stops the boot vCPU, the engine stops the spinning secondaries too", async () => {
  const { engine, fake } = fakeMachine(
    { 0: [{ exit: "spin" }], 1: [{ exit: "spin" }], 2: [{ exit: "spin" }] },
    3,
  );
  try {
    const r = await engine.run(flat32Entry(0x1000), new RecordingIo(), { timeoutMs: 50 });
    assert.equal(r.timedOut, true);
    assert.equal(r.cpu, 0);
    assert.deepEqual(
      r.cpuEvents.map((e) => e.kind),
      ["stopped", "stopped", "stopped"],
    );
    for (const fd of ["vcpu1", "vcpu2"]) assert.equal(runs(fake, fd)[0], "spin", `${fd} ran in its thread`);
  } finally {
    engine.close();
  }
});

test("fake KVM: a failing KVM_RUN on the boot vCPU is thrown after the secondary vCPU threads have stopped", async () => {
  const { engine, fake } = fakeMachine({ 0: [{ exit: "error", errno: 14 }], 1: [{ exit: "spin" }] }, 2);
  try {
    await assert.rejects(engine.run(flat32Entry(0x1000), new RecordingIo()), (err: unknown) => {
      assert.ok(err instanceof SysError);
      assert.equal(err.syscall, "ioctl(KVM_RUN)");
      assert.equal(err.errnoName, "EFAULT");
      return true;
    });
    // The engine is not left "running": a second run() gets past KVM_BUSY, to KVM_CREATE_VCPU (vCPU 1 exists).
    await assert.rejects(engine.run(flat32Entry(0x1000), new RecordingIo()), /EEXIST/);
  } finally {
    engine.close();
  }
  assert.deepEqual(fake.openFds(), []);
});

test("fake KVM: a secondary vCPU whose thread fails reports why, and the run ends with it", async () => {
  // vCPU 1's script is empty: the fake throws on its first KVM_RUN, inside the worker thread.
  const { engine } = fakeMachine({ 0: [{ exit: "spin" }], 1: [] }, 2);
  try {
    const r = await engine.run(flat32Entry(0x1000), new RecordingIo());
    assert.equal(r.cpu, 1);
    assert.equal(r.event.kind, "unhandled_exit");
    assert.match((r.event as { name: string }).name, /vCPU 1 called KVM_RUN after the end of its script/);
    assert.equal(r.cpuEvents[0]!.kind, "stopped");
  } finally {
    engine.close();
  }
});
