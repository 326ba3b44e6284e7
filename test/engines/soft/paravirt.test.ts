/**
 * The soft engine's KVM paravirtual interface (src/engines/soft/paravirt.ts): the CPUID signature
 * and features, the kvmclock MSRs writing pvclock records the guest can extrapolate exactly from
 * the TSC, and VMCALL/VMMCALL hypercalls answered by the VMM.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { readTsc } from "../../../src/engines/soft/insn_system.js";
import {
  KVM_HC_KICK_CPU,
  MSR_KVM_SYSTEM_TIME_NEW,
  pvclockScale,
  SoftParavirt,
} from "../../../src/engines/soft/paravirt.js";
import { isEnd, machine } from "./soft_cpu_harness.js";

const EAX = 0;
const PVTI = 0x6000;
const WALL = 0x6100;

// biome-ignore format: one instruction per line, assembly beside the bytes
const PROGRAM = [
  0xb8, 0x00, 0x00, 0x00, 0x40,       // mov eax, 0x40000000
  0x0f, 0xa2,                         // cpuid
  0x89, 0x1d, 0x00, 0x50, 0x00, 0x00, // mov [0x5000], ebx
  0x89, 0x0d, 0x04, 0x50, 0x00, 0x00, // mov [0x5004], ecx
  0x89, 0x15, 0x08, 0x50, 0x00, 0x00, // mov [0x5008], edx
  0xa3, 0x0c, 0x50, 0x00, 0x00,       // mov [0x500c], eax
  0xb8, 0x01, 0x00, 0x00, 0x40,       // mov eax, 0x40000001
  0x0f, 0xa2,                         // cpuid
  0xa3, 0x10, 0x50, 0x00, 0x00,       // mov [0x5010], eax
  0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1
  0x0f, 0xa2,                         // cpuid
  0x89, 0x0d, 0x1c, 0x50, 0x00, 0x00, // mov [0x501c], ecx
  0xb9, 0x01, 0x4d, 0x56, 0x4b,       // mov ecx, 0x4b564d01 (MSR_KVM_SYSTEM_TIME_NEW)
  0xb8, 0x01, 0x60, 0x00, 0x00,       // mov eax, 0x6001 (PVTI | enable)
  0x31, 0xd2,                         // xor edx, edx
  0x0f, 0x30,                         // wrmsr
  0xb9, 0x00, 0x4d, 0x56, 0x4b,       // mov ecx, 0x4b564d00 (MSR_KVM_WALL_CLOCK_NEW)
  0xb8, 0x00, 0x61, 0x00, 0x00,       // mov eax, 0x6100 (WALL)
  0x0f, 0x30,                         // wrmsr
  0xb8, 0x05, 0x00, 0x00, 0x00,       // mov eax, 5 (KVM_HC_KICK_CPU)
  0x0f, 0x01, 0xc1,                   // vmcall
  0xa3, 0x14, 0x50, 0x00, 0x00,       // mov [0x5014], eax
  0xb8, 0x63, 0x00, 0x00, 0x00,       // mov eax, 99 (no such hypercall)
  0x0f, 0x01, 0xd9,                   // vmmcall
  0xa3, 0x18, 0x50, 0x00, 0x00,       // mov [0x5018], eax
  0xfa,                               // cli
  0xf4,                               // hlt
];

function ascii(...words: number[]): string {
  return Buffer.from(Uint32Array.from(words).buffer).toString("latin1");
}

/** What Linux's pvclock_clocksource_read computes from the record and a TSC value. */
function guestNs(m: ReturnType<typeof machine>, tsc: number): number {
  const ts = Number(m.memory.readU64(PVTI + 8));
  const system = Number(m.memory.readU64(PVTI + 16));
  const mul = m.memory.readU32(PVTI + 24);
  const shift = (m.memory.readU8(PVTI + 28) << 24) >> 24;
  let delta = BigInt(tsc - ts);
  delta = shift >= 0 ? delta << BigInt(shift) : delta >> BigInt(-shift);
  return system + Number((delta * BigInt(mul)) >> 32n);
}

test("soft paravirt: CPUID shows the KVM signature, VMCALL and VMMCALL reach the VMM, kvmclock extrapolates the TSC", () => {
  const m = machine(PROGRAM);
  let ns = 5_000_000_123;
  const cpu = m.soft.cpu;
  cpu.clockNs = () => ns;
  cpu.tscHz = 999_933_000;
  const pv = new SoftParavirt(m.memory, { wallClockNs: () => 1_800_000_000_000_000_000n });
  cpu.paravirt = pv;
  assert.ok(isEnd(m.run()));

  assert.equal(
    ascii(m.memory.readU32(0x5000), m.memory.readU32(0x5004), m.memory.readU32(0x5008)),
    "KVMKVMKVM\0\0\0",
  );
  assert.equal(m.memory.readU32(0x500c), 0x40000001, "highest PV leaf");
  const features = m.memory.readU32(0x5010);
  assert.ok(features & (1 << 3), "KVM_FEATURE_CLOCKSOURCE2");
  assert.ok(features & (1 << 24), "KVM_FEATURE_CLOCKSOURCE_STABLE_BIT");
  assert.ok(m.memory.readU32(0x501c) & 0x8000_0000, "CPUID.1:ECX.hypervisor");
  assert.equal(m.memory.readU32(0x5014), 0, "KICK_CPU answered 0");
  assert.equal(m.memory.readU32(0x5018) | 0, -1000, "unknown hypercall: -KVM_ENOSYS");
  assert.equal(pv.stats.hypercalls.get(KVM_HC_KICK_CPU), 1);
  assert.equal(pv.stats.hypercalls.get(99), 1);

  // pvclock_vcpu_time_info: even version, stable flag, and time that follows the TSC.
  assert.equal(m.memory.readU32(PVTI) % 2, 0);
  assert.ok(m.memory.readU32(PVTI) > 0);
  assert.equal(m.memory.readU8(PVTI + 29) & 1, 1, "PVCLOCK_TSC_STABLE_BIT");
  for (const later of [0, 1_000, 3_700_000_001, 600e9]) {
    ns = 5_000_000_123 + later;
    // Exact up to the rounding of the 32-bit multiplier (under 1 ns per second, as on KVM).
    assert.ok(Math.abs(guestNs(m, readTsc(cpu)) - ns) <= 2 + later * 1e-9, `kvmclock at +${later} ns`);
  }
  // pvclock_wall_clock: host time at guest system time 0.
  assert.equal(m.memory.readU32(WALL) % 2, 0);
  assert.equal(m.memory.readU32(WALL + 4), 1_799_999_994);
  assert.equal(m.memory.readU32(WALL + 8), 999_999_877);
  assert.equal(cpu.paravirt.readMsr(cpu, MSR_KVM_SYSTEM_TIME_NEW), 0x6001n);
});

test("soft paravirt: a WRMSR to the TSC rewrites the kvmclock record", () => {
  // biome-ignore format: assembly beside the bytes
  const m = machine([
    0xb9, 0x01, 0x4d, 0x56, 0x4b, // mov ecx, 0x4b564d01
    0xb8, 0x01, 0x60, 0x00, 0x00, // mov eax, 0x6001
    0x31, 0xd2,                   // xor edx, edx
    0x0f, 0x30,                   // wrmsr
    0xb9, 0x10, 0x00, 0x00, 0x00, // mov ecx, 0x10 (IA32_TSC)
    0xb8, 0x00, 0x00, 0x00, 0x00, // mov eax, 0
    0xba, 0x07, 0x00, 0x00, 0x00, // mov edx, 7
    0x0f, 0x30,                   // wrmsr
    0xfa, 0xf4,                   // cli; hlt
  ]);
  let ns = 42_000;
  m.soft.cpu.clockNs = () => ns;
  m.soft.cpu.paravirt = new SoftParavirt(m.memory);
  assert.ok(isEnd(m.run()));
  ns += 1_000_000;
  assert.ok(Math.abs(guestNs(m, readTsc(m.soft.cpu)) - ns) <= 2);
});

test("soft paravirt: VMCALL is #UD without the paravirt interface, and -KVM_EPERM from ring 3", () => {
  const m = machine([0x0f, 0x01, 0xc1, 0xfa, 0xf4]); // vmcall; cli; hlt
  m.run();
  assert.equal(m.vector(), 6);
  const u = machine([0xb8, 0x05, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xa3, 0x00, 0x50, 0, 0, 0xcd, 0x03], {
    cpl3: true,
  }); // mov eax,5; vmcall; mov [0x5000],eax; int3
  u.soft.cpu.paravirt = new SoftParavirt(u.memory);
  u.run();
  assert.equal(u.vector(), 3);
  assert.equal(u.memory.readU32(0x5000) | 0, -1);
  assert.equal(u.soft.cpu.regs[EAX]! | 0, -1);
});

test("pvclockScale keeps the multiplier in [2^31, 2^32)", () => {
  for (const hz of [1e9, 999_933_000, 3.6e9, 25e6]) {
    const { mul, shift } = pvclockScale(hz);
    assert.ok(mul >= 2 ** 31 && mul < 2 ** 32, `${hz}`);
    assert.ok(Math.abs(mul * 2 ** shift - (1e9 / hz) * 2 ** 32) / 2 ** 32 < 1e-6);
  }
});
