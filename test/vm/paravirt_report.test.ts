/**
 * The paravirtual parts of `vessel vm run`: the --stats lines for virtio devices and the soft
 * engine's PV interface, the --rootfs flag's checks, and the KVM vCPU CPUID keeping the in-kernel
 * PV leaves (0x40000000 signature, 0x40000001 features) that KVM_GET_SUPPORTED_CPUID offers.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { vcpuCpuid } from "../../src/engines/kvm/cpuid.js";
import { formatParavirtStats, paravirtReport } from "../../src/vm/paravirt_report.js";

const bin = fileURLToPath(new URL("../../../bin/vessel.js", import.meta.url));

test("--stats names hypercalls by KVM_HC_* and lists virtio devices with their non-zero counters", () => {
  const pv = paravirtReport({
    hypercalls: new Map([
      [5, 2],
      [77, 1],
    ]),
    systemTimeWrites: 1,
    wallClockWrites: 1,
  });
  assert.deepEqual(pv, { hypercalls: { KICK_CPU: 2, "#77": 1 }, kvmclockWrites: 2 });
  const lines = formatParavirtStats(
    [{ name: "virtio-rng", notifies: 4, interrupts: 3, guestErrors: 0, metrics: { requests: 4 } }],
    pv,
  );
  assert.deepEqual(lines, [
    "paravirt      kvmclock MSR writes 2, hypercalls 3 (KICK_CPU 2, #77 1)",
    "virtio        virtio-rng: 4 notifies, 3 interrupts; requests 4",
  ]);
  assert.deepEqual(formatParavirtStats(undefined, undefined), []);
});

test("vm run --rootfs takes only debian[,rw], and says how to build a missing image", () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [bin, "vm", "run", "--engine", "soft", ...args, "--", "true"], {
      encoding: "utf8",
      env: { ...process.env, ...env },
      timeout: 60_000,
    });
  const bad = run(["--rootfs", "ubuntu"]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--rootfs ubuntu: the only root filesystem is "debian"/);
  // An empty cache: the default guest is missing too, so point --kernel at something.
  const empty = mkdtempSync(join(tmpdir(), "vessel-rootfs-"));
  const missing = run(["--kernel", bin, "--rootfs", "debian"], { XDG_CACHE_HOME: empty });
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /vessel guest build --arch i386 --rootfs debian/);
});

test("the KVM vCPU CPUID keeps KVM's paravirtual leaves (signature and in-kernel features)", () => {
  const supported = [
    { function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
    {
      function: 0x40000000,
      index: 0,
      flags: 0,
      eax: 0x40000001,
      ebx: 0x4b4d564b,
      ecx: 0x564b4d56,
      edx: 0x4d,
    },
    { function: 0x40000001, index: 0, flags: 0, eax: 0x1007efb, ebx: 0, ecx: 0, edx: 0 },
  ];
  const out = vcpuCpuid(supported, 0, 1);
  const leaf = (f: number) => out.find((e) => e.function === f);
  assert.ok((leaf(1)!.ecx & 0x8000_0000) !== 0, "hypervisor bit");
  assert.equal(leaf(0x40000000)!.ebx, 0x4b4d564b);
  assert.equal(
    leaf(0x40000001)!.eax,
    0x1007efb,
    "kvmclock, PV EOI, PV send-IPI, steal time, ... as KVM offers them",
  );
});
