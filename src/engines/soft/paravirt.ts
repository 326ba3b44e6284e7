/**
 * The KVM paravirtual CPU interface of the software engine, so an unmodified Linux guest knows it
 * runs under a hypervisor and switches to the paravirtual clock (Linux: arch/x86/kernel/kvm.c,
 * kvmclock.c, pvclock.c). Specs: linux-doc-6.1 virt/kvm/x86/cpuid.rst, msr.rst, hypercalls.rst.
 *
 *   CPUID 0x40000000  EAX = highest PV leaf (0x40000001), EBX ECX EDX = "KVMKVMKVM\0\0\0"
 *   CPUID 0x40000001  EAX = features (bit numbers below), EDX = hints (none)
 *   CPUID 1           ECX bit 31 "hypervisor present": Linux looks for the signature only then
 *   MSR 0x4b564d00    MSR_KVM_WALL_CLOCK_NEW: the guest writes a guest-physical address; the VMM
 *                     writes there a pvclock_wall_clock (the host time at guest system time 0)
 *   MSR 0x4b564d01    MSR_KVM_SYSTEM_TIME_NEW: bit 0 enable, bits 63..1 the address of the vCPU's
 *                     pvclock_vcpu_time_info, which the VMM keeps current
 *   VMCALL/VMMCALL    hypercall: number in EAX, arguments EBX ECX EDX ESI, result in EAX
 *
 * The soft engine's TSC is a linear function of its virtual clock (insn_system.ts `readTsc`:
 * TSC = clockNs * tscHz / 1e9 + tscOffset), so one pvclock record (TSC and system time sampled
 * together, the TSC->ns scale) stays exact until the TSC offset changes; it is rewritten then, and
 * PVCLOCK_TSC_STABLE_BIT tells the guest that the clock is monotonic across vCPUs.
 */
import type { GuestMemory } from "../../memory/guest_memory.js";
import type { Cpu } from "./cpu.js";
import { readTsc } from "./insn_system.js";
import type { Insn } from "./insn.js";
import { Reg } from "./registers.js";

export const KVM_CPUID_SIGNATURE = 0x40000000;
export const KVM_CPUID_FEATURES = 0x40000001;

/** CPUID 0x40000001 EAX bits (arch/x86/include/uapi/asm/kvm_para.h). */
export const KVM_FEATURE_NOP_IO_DELAY = 1;
export const KVM_FEATURE_CLOCKSOURCE2 = 3;
export const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT = 24;

export const MSR_KVM_WALL_CLOCK_NEW = 0x4b564d00;
export const MSR_KVM_SYSTEM_TIME_NEW = 0x4b564d01;

/** pvclock_vcpu_time_info.flags (arch/x86/include/asm/pvclock-abi.h). */
export const PVCLOCK_TSC_STABLE_BIT = 1 << 0;

/** Hypercall numbers (include/uapi/linux/kvm_para.h) and their error results. */
export const KVM_HC_VAPIC_POLL_IRQ = 1;
export const KVM_HC_KICK_CPU = 5;
export const KVM_HC_SCHED_YIELD = 11;
export const KVM_ENOSYS = 1000;
export const KVM_EPERM = 1;

/** "KVMKVMKVM\0\0\0" as EBX, ECX, EDX. */
const SIGNATURE = [0x4b4d564b, 0x564b4d56, 0x0000004d];

/**
 * pvclock_vcpu_time_info (32 bytes, packed): u32 version, u32 pad0, u64 tsc_timestamp,
 * u64 system_time, u32 tsc_to_system_mul, s8 tsc_shift, u8 flags, u8 pad[2].
 */
const PVTI_VERSION = 0;
const PVTI_TSC_TIMESTAMP = 8;
const PVTI_SYSTEM_TIME = 16;
const PVTI_MUL = 24;
const PVTI_SHIFT = 28;
const PVTI_FLAGS = 29;
const PVTI_SIZE = 32;
/** pvclock_wall_clock (12 bytes, packed): u32 version, u32 sec, u32 nsec. */
const WALL_SIZE = 12;

/**
 * The multiplier and shift with which the guest turns TSC ticks into nanoseconds
 * (pvclock_scale_delta: delta <<= shift (>>= -shift when negative); ns = delta * mul >> 32),
 * chosen as KVM's kvm_get_time_scale does: mul in [2^31, 2^32) for the most precision.
 */
export function pvclockScale(tscHz: number): { mul: number; shift: number } {
  let shift = 0;
  let ratio = (1e9 / tscHz) * 2 ** 32; // mul * 2^shift
  while (ratio >= 2 ** 32) {
    ratio /= 2;
    shift++;
  }
  while (ratio < 2 ** 31) {
    ratio *= 2;
    shift--;
  }
  return { mul: Math.min(Math.round(ratio), 0xffffffff), shift };
}

export interface ParavirtStats {
  /** Hypercalls by number (VMCALL and VMMCALL alike). */
  hypercalls: Map<number, number>;
  /** Writes of the kvmclock MSRs. */
  systemTimeWrites: number;
  wallClockWrites: number;
}

export interface SoftParavirtOptions {
  /** Host wall-clock time in ns (default Date.now()); the guest's boot time is now - system time. */
  wallClockNs?: () => bigint;
}

/**
 * The VMM side of the KVM PV interface for one software vCPU. Install with `cpu.paravirt = pv`
 * (the CPUID, RDMSR/WRMSR and VMCALL/VMMCALL handlers consult it when present).
 */
export class SoftParavirt {
  readonly features =
    (1 << KVM_FEATURE_NOP_IO_DELAY) |
    (1 << KVM_FEATURE_CLOCKSOURCE2) |
    (1 << KVM_FEATURE_CLOCKSOURCE_STABLE_BIT);
  readonly stats: ParavirtStats = { hypercalls: new Map(), systemTimeWrites: 0, wallClockWrites: 0 };
  private systemTimeMsr = 0n;
  private wallClockMsr = 0n;
  private version = 0;
  private readonly wallClockNs: () => bigint;

  constructor(
    private readonly memory: GuestMemory,
    opts: SoftParavirtOptions = {},
  ) {
    this.wallClockNs = opts.wallClockNs ?? (() => BigInt(Date.now()) * 1_000_000n);
  }

  /** CPUID leaves of the hypervisor range; undefined for a leaf that is not ours. */
  cpuid(leaf: number): [number, number, number, number] | undefined {
    if (leaf === KVM_CPUID_SIGNATURE)
      return [KVM_CPUID_FEATURES, SIGNATURE[0]!, SIGNATURE[1]!, SIGNATURE[2]!];
    if (leaf === KVM_CPUID_FEATURES) return [this.features, 0, 0, 0];
    if (leaf > KVM_CPUID_FEATURES && leaf <= 0x400000ff) return [0, 0, 0, 0];
    return undefined;
  }

  readMsr(_c: Cpu, index: number): bigint | undefined {
    if (index === MSR_KVM_SYSTEM_TIME_NEW) return this.systemTimeMsr;
    if (index === MSR_KVM_WALL_CLOCK_NEW) return this.wallClockMsr;
    return undefined;
  }

  /** True when the MSR is ours (written); an address outside guest RAM raises #GP as KVM does. */
  writeMsr(c: Cpu, index: number, value: bigint): boolean {
    if (index === MSR_KVM_SYSTEM_TIME_NEW) {
      this.stats.systemTimeWrites++;
      if ((value & 1n) !== 0n && !this.fits(Number(value & 0xfffffffen), PVTI_SIZE)) c.gp(0);
      this.systemTimeMsr = value;
      this.updateSystemTime(c);
      return true;
    }
    if (index === MSR_KVM_WALL_CLOCK_NEW) {
      this.stats.wallClockWrites++;
      const gpa = Number(value & 0xffffffffn);
      if (!this.fits(gpa, WALL_SIZE)) c.gp(0);
      this.wallClockMsr = value;
      this.writeWallClock(c, gpa);
      return true;
    }
    return false;
  }

  /**
   * Rewrites the vCPU's pvclock record from the current TSC and virtual time (after the enable
   * MSR write, and whenever the TSC's relation to the clock changes, e.g. a WRMSR to the TSC).
   * The version is odd while the record is being written (pvclock-abi.h).
   */
  updateSystemTime(c: Cpu): void {
    if ((this.systemTimeMsr & 1n) === 0n) return;
    const gpa = Number(this.systemTimeMsr & 0xfffffffen);
    const m = this.memory;
    const { mul, shift } = pvclockScale(c.tscHz);
    m.writeU32(gpa + PVTI_VERSION, ++this.version >>> 0);
    // Sample the TSC and the clock at one instant: the TSC is derived from the clock, and the
    // guest's extrapolation system_time + scale(tsc - tsc_timestamp) must equal clockNs later.
    // The TSC is floor(clockNs * tscHz / 1e9) + offset: system_time is the instant it stands for.
    const tsc = readTsc(c);
    const ns = ((tsc - c.tscOffset) * 1e9) / c.tscHz;
    m.writeU64(gpa + PVTI_TSC_TIMESTAMP, BigInt(Math.max(0, tsc)));
    m.writeU64(gpa + PVTI_SYSTEM_TIME, BigInt(Math.max(0, Math.round(ns))));
    m.writeU32(gpa + PVTI_MUL, mul);
    m.writeU8(gpa + PVTI_SHIFT, shift & 0xff);
    m.writeU8(gpa + PVTI_FLAGS, PVCLOCK_TSC_STABLE_BIT);
    m.writeU32(gpa + PVTI_VERSION, ++this.version >>> 0);
  }

  private fits(gpa: number, size: number): boolean {
    try {
      this.memory.slice(gpa, size);
      return true;
    } catch {
      return false;
    }
  }

  private writeWallClock(c: Cpu, gpa: number): void {
    let bootNs = this.wallClockNs() - BigInt(Math.round(c.clockNs()));
    if (bootNs < 0n) bootNs = 0n;
    const m = this.memory;
    const version = (m.readU32(gpa) + 1) | 1;
    m.writeU32(gpa, version >>> 0);
    m.writeU32(gpa + 4, Number((bootNs / 1_000_000_000n) & 0xffffffffn));
    m.writeU32(gpa + 8, Number(bootNs % 1_000_000_000n));
    m.writeU32(gpa + 0, (version + 1) >>> 0);
  }

  /**
   * VMCALL / VMMCALL (hypercalls.rst): EAX = number, EBX ECX EDX ESI = arguments, EAX = result.
   * Only ring 0 may call (KVM answers -KVM_EPERM otherwise). With one vCPU, KICK_CPU (wake a
   * vCPU halted in a PV spinlock) and SCHED_YIELD have nothing to do; VAPIC_POLL_IRQ only asks
   * for an exit, which the soft engine's interrupt check between slices gives anyway.
   */
  hypercall(c: Cpu): void {
    const nr = c.regs[Reg.EAX]! >>> 0;
    this.stats.hypercalls.set(nr, (this.stats.hypercalls.get(nr) ?? 0) + 1);
    let result: number;
    if (c.cpl !== 0) result = -KVM_EPERM;
    else if (nr === KVM_HC_KICK_CPU || nr === KVM_HC_SCHED_YIELD || nr === KVM_HC_VAPIC_POLL_IRQ) result = 0;
    else result = -KVM_ENOSYS;
    c.regs[Reg.EAX] = result;
  }
}

/**
 * 0F 01 /0 and /3 in register form: 0F 01 C1 VMCALL (Intel), 0F 01 D9 VMMCALL (AMD); the memory
 * forms are SGDT and LIDT. Without a paravirt interface (or another register form) they are #UD.
 */
export function vmcallOr(memForm: (c: Cpu, i: Insn) => void): (c: Cpu, i: Insn) => void {
  return (c, i) => {
    if (i.isMem) return memForm(c, i);
    if (i.rm !== 1 || c.paravirt === undefined) return c.ud();
    c.paravirt.hypercall(c);
  };
}
