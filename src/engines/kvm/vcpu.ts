import type { EntryState, SegmentState } from "../../boot/entry_state.js";
import {
  APIC_LVT0,
  APIC_LVT1,
  APIC_MODE_EXTINT,
  APIC_MODE_NMI,
  type CpuidEntry,
  decodeFpu,
  decodeMsrs,
  decodeRegs,
  decodeSregs,
  encodeCpuid2,
  encodeFpu,
  encodeMpState,
  encodeMsrs,
  encodeRegs,
  encodeSregs,
  KVM_FPU_SIZE,
  KVM_GET_FPU,
  KVM_GET_LAPIC,
  KVM_GET_MP_STATE,
  KVM_GET_MSRS,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_LAPIC_STATE_SIZE,
  KVM_MP_STATE_RUNNABLE,
  KVM_MP_STATE_UNINITIALIZED,
  KVM_REGS_SIZE,
  KVM_SET_CPUID2,
  KVM_SET_FPU,
  KVM_SET_LAPIC,
  KVM_SET_MP_STATE,
  KVM_SET_MSRS,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SREGS_SIZE,
  type KvmFpu,
  type KvmRegs,
  type KvmSegment,
  type KvmSregs,
  MSR_CSTAR,
  MSR_IA32_MISC_ENABLE,
  MSR_IA32_MISC_ENABLE_FAST_STRING,
  MSR_IA32_SYSENTER_CS,
  MSR_IA32_SYSENTER_EIP,
  MSR_IA32_SYSENTER_ESP,
  MSR_IA32_TSC,
  MSR_KERNEL_GS_BASE,
  MSR_LSTAR,
  MSR_MTRR_DEF_TYPE,
  MSR_STAR,
  MSR_SYSCALL_MASK,
  type MsrEntry,
  REG_NAMES,
} from "../../sys/kvm_abi.js";
import { viewHostMemory } from "../../sys/mman.js";
import { vcpuCpuid } from "./cpuid.js";
import { hostKvm, type KvmDevice } from "./kvm_device.js";
import { KvmError } from "./kvm_error.js";

/**
 * One KVM vCPU (api.rst section 4, "vcpu ioctl"s), constructed from its fd so that it can live in
 * any thread: the vCPU worker maps its kvm_run area and runs it there.
 */
export class KvmVcpu {
  readonly fd: number;
  readonly id: number;
  /** The ioctl interface of this vCPU's fd (the host's KVM, or a test's fake). */
  readonly device: KvmDevice;
  /** The mmap'ed struct kvm_run (sys/kvm_abi.ts RUN_* offsets). */
  readonly run: Uint8Array;
  readonly runView: DataView;
  private readonly runAddress: bigint;
  private readonly runSize: number;

  constructor(fd: number, id: number, mmapSize: number, device: KvmDevice = hostKvm) {
    this.fd = fd;
    this.id = id;
    this.device = device;
    this.runSize = mmapSize;
    this.runAddress = device.mmapRun(fd, mmapSize);
    const buf = viewHostMemory(this.runAddress, mmapSize);
    this.run = new Uint8Array(buf);
    this.runView = new DataView(buf);
  }

  getRegs(): KvmRegs {
    const buf = new Uint8Array(KVM_REGS_SIZE);
    this.device.ioctlPtr(this.fd, KVM_GET_REGS, buf, "KVM_GET_REGS");
    return decodeRegs(buf);
  }
  setRegs(regs: KvmRegs): void {
    this.device.ioctlPtr(this.fd, KVM_SET_REGS, encodeRegs(regs), "KVM_SET_REGS");
  }
  getSregs(): KvmSregs {
    const buf = new Uint8Array(KVM_SREGS_SIZE);
    this.device.ioctlPtr(this.fd, KVM_GET_SREGS, buf, "KVM_GET_SREGS");
    return decodeSregs(buf);
  }
  setSregs(sregs: KvmSregs): void {
    this.device.ioctlPtr(this.fd, KVM_SET_SREGS, encodeSregs(sregs), "KVM_SET_SREGS");
  }
  getFpu(): KvmFpu {
    const buf = new Uint8Array(KVM_FPU_SIZE);
    this.device.ioctlPtr(this.fd, KVM_GET_FPU, buf, "KVM_GET_FPU");
    return decodeFpu(buf);
  }
  setFpu(fpu: KvmFpu): void {
    this.device.ioctlPtr(this.fd, KVM_SET_FPU, encodeFpu(fpu), "KVM_SET_FPU");
  }
  setCpuid(entries: readonly CpuidEntry[]): void {
    this.device.ioctlPtr(this.fd, KVM_SET_CPUID2, encodeCpuid2(entries), "KVM_SET_CPUID2");
  }
  /** KVM_SET_MSRS returns how many were set; fewer than asked means one was refused. */
  setMsrs(entries: readonly MsrEntry[]): void {
    const n = this.device.ioctlPtr(this.fd, KVM_SET_MSRS, encodeMsrs(entries), "KVM_SET_MSRS");
    if (n !== entries.length) {
      const bad = entries[n];
      throw new KvmError(
        "KVM_MSR",
        `KVM_SET_MSRS refused MSR 0x${bad?.index.toString(16)} (set ${n} of ${entries.length})`,
        {
          index: bad?.index,
        },
      );
    }
  }
  getMsrs(indexes: readonly number[]): MsrEntry[] {
    const buf = encodeMsrs(indexes.map((index) => ({ index, data: 0n })));
    const n = this.device.ioctlPtr(this.fd, KVM_GET_MSRS, buf, "KVM_GET_MSRS");
    return decodeMsrs(buf).slice(0, n);
  }
  getLapic(): Uint8Array {
    const buf = new Uint8Array(KVM_LAPIC_STATE_SIZE);
    this.device.ioctlPtr(this.fd, KVM_GET_LAPIC, buf, "KVM_GET_LAPIC");
    return buf;
  }
  setLapic(state: Uint8Array): void {
    this.device.ioctlPtr(this.fd, KVM_SET_LAPIC, state, "KVM_SET_LAPIC");
  }
  getMpState(): number {
    const buf = new Uint8Array(4);
    this.device.ioctlPtr(this.fd, KVM_GET_MP_STATE, buf, "KVM_GET_MP_STATE");
    return new DataView(buf.buffer).getUint32(0, true);
  }
  setMpState(state: number): void {
    this.device.ioctlPtr(this.fd, KVM_SET_MP_STATE, encodeMpState(state), "KVM_SET_MP_STATE");
  }

  /**
   * The MSRs a directly booted kernel expects (Firecracker's arch/x86_64/msr.rs boot MSRs): SYSENTER
   * and SYSCALL targets cleared, TSC at 0, fast strings enabled, MTRRs enabled with write-back
   * default type (MTRRdefType: E bit 11, type 6).
   */
  setBootMsrs(): void {
    this.setMsrs([
      { index: MSR_IA32_SYSENTER_CS, data: 0n },
      { index: MSR_IA32_SYSENTER_ESP, data: 0n },
      { index: MSR_IA32_SYSENTER_EIP, data: 0n },
      { index: MSR_STAR, data: 0n },
      { index: MSR_CSTAR, data: 0n },
      { index: MSR_KERNEL_GS_BASE, data: 0n },
      { index: MSR_SYSCALL_MASK, data: 0n },
      { index: MSR_LSTAR, data: 0n },
      { index: MSR_IA32_TSC, data: 0n },
      { index: MSR_IA32_MISC_ENABLE, data: MSR_IA32_MISC_ENABLE_FAST_STRING },
      { index: MSR_MTRR_DEF_TYPE, data: (1n << 11n) | 6n },
    ]);
  }

  /** x87 and SSE at their reset values (FCW 0x37f: all exceptions masked; MXCSR 0x1f80). */
  setBootFpu(): void {
    this.setFpu({
      fpr: new Uint8Array(128),
      fcw: 0x37f,
      fsw: 0,
      ftwx: 0,
      lastOpcode: 0,
      lastIp: 0n,
      lastDp: 0n,
      xmm: new Uint8Array(256),
      mxcsr: 0x1f80,
    });
  }

  /**
   * Local APIC LINT0 = ExtINT (the 8259's INTR reaches the CPU through it, as on a PC) and
   * LINT1 = NMI, as the MP specification's virtual-wire mode expects (Intel SDM vol. 3, 11.5.1).
   */
  setLapicLints(): void {
    const lapic = this.getLapic();
    const dv = new DataView(lapic.buffer);
    const lvt = (off: number, mode: number) =>
      dv.setUint32(off, (dv.getUint32(off, true) & ~0x700) | (mode << 8), true);
    lvt(APIC_LVT0, APIC_MODE_EXTINT);
    lvt(APIC_LVT1, APIC_MODE_NMI);
    this.setLapic(lapic);
  }

  /**
   * Loads an engine-independent entry state (boot/entry_state.ts) into the vCPU: KVM_SET_SREGS with
   * the segments, tables and control registers, then KVM_SET_REGS with RIP, RSP, RSI, RFLAGS.
   */
  loadEntryState(entry: EntryState): void {
    const sregs = this.getSregs();
    const seg = (s: SegmentState): KvmSegment => ({
      base: BigInt(s.base),
      limit: s.limit >>> 0,
      selector: s.selector,
      type: s.type,
      present: s.present ? 1 : 0,
      dpl: s.dpl,
      db: s.db ? 1 : 0,
      s: s.s ? 1 : 0,
      l: s.l ? 1 : 0,
      g: s.g ? 1 : 0,
      avl: 0,
      unusable: s.present ? 0 : 1,
    });
    this.setSregs({
      ...sregs,
      cs: seg(entry.cs),
      ds: seg(entry.ds),
      es: seg(entry.es),
      fs: seg(entry.fs),
      gs: seg(entry.gs),
      ss: seg(entry.ss),
      tr: seg(entry.tr),
      ldt: seg(entry.ldt),
      gdt: { base: BigInt(entry.gdt.base), limit: entry.gdt.limit },
      idt: { base: BigInt(entry.idt.base), limit: entry.idt.limit },
      cr0: BigInt(entry.cr0),
      cr3: BigInt(entry.cr3),
      cr4: BigInt(entry.cr4),
      efer: BigInt(entry.efer),
    });
    const regs = Object.fromEntries(REG_NAMES.map((n) => [n, 0n])) as KvmRegs;
    regs.rip = BigInt(entry.rip);
    regs.rsp = BigInt(entry.rsp);
    regs.rsi = BigInt(entry.rsi);
    regs.rflags = BigInt(entry.rflags | 2); // bit 1 is always set
    this.setRegs(regs);
  }

  /** A register dump for crash reports (internal error, fail-entry, triple fault). */
  dump(): string {
    const hex = (v: bigint, w = 16) => v.toString(16).padStart(w, "0");
    const lines: string[] = [];
    try {
      const r = this.getRegs();
      const names = REG_NAMES;
      for (let i = 0; i < names.length; i += 4) {
        lines.push(
          names
            .slice(i, i + 4)
            .map((n) => `${n.padStart(6)}=${hex(r[n])}`)
            .join(" "),
        );
      }
      const s = this.getSregs();
      for (const n of ["cs", "ds", "es", "ss", "fs", "gs", "tr", "ldt"] as const) {
        const g = s[n];
        lines.push(
          `${n.padStart(6)}=${g.selector.toString(16).padStart(4, "0")} base=${hex(g.base)} limit=${g.limit.toString(16)} type=${g.type} dpl=${g.dpl} p=${g.present} s=${g.s} l=${g.l} db=${g.db} g=${g.g}`,
        );
      }
      lines.push(
        `   gdt=${hex(s.gdt.base)}/${s.gdt.limit.toString(16)} idt=${hex(s.idt.base)}/${s.idt.limit.toString(16)}`,
      );
      lines.push(
        `   cr0=${hex(s.cr0)} cr2=${hex(s.cr2)} cr3=${hex(s.cr3)} cr4=${hex(s.cr4)} efer=${hex(s.efer)}`,
      );
    } catch (err) {
      lines.push(`(registers unavailable: ${err instanceof Error ? err.message : String(err)})`);
    }
    return lines.join("\n");
  }

  /** Host address of the kvm_run mapping (published in the vCPU's VcpuLink for kicks). */
  runAddressForLink(): bigint {
    return this.runAddress;
  }

  close(): void {
    this.device.unmapRun(this.runAddress, this.runSize);
  }
}

/** What every vCPU of a machine is given before it first runs. */
export interface VcpuConfig {
  /** KVM_GET_SUPPORTED_CPUID of the host (cpuid.ts derives each vCPU's view). */
  supportedCpuid: readonly CpuidEntry[];
  cpuCount: number;
  /** The boot CPU's entry state; secondary CPUs have none (they wait for INIT/SIPI). */
  entry?: EntryState;
  /** True when the VM has an in-kernel irqchip (LAPIC LINTs and MP state are set then). */
  irqchip: boolean;
}

/**
 * Configures a vCPU in the thread that will run it: CPUID (hypervisor bit, APIC id, topology),
 * boot MSRs, FPU, LAPIC LINT0=ExtINT/LINT1=NMI, and either the entry state (boot CPU, RUNNABLE)
 * or MP state UNINITIALIZED (secondary: KVM_RUN blocks until the guest sends INIT and SIPI
 * through its LAPIC; the CPU then starts in real mode at vector * 0x1000, api.rst 4.38).
 */
export function configureVcpu(vcpu: KvmVcpu, config: VcpuConfig): void {
  vcpu.setCpuid(vcpuCpuid(config.supportedCpuid, vcpu.id, config.cpuCount));
  vcpu.setBootMsrs();
  vcpu.setBootFpu();
  if (config.irqchip) vcpu.setLapicLints();
  if (config.entry !== undefined) {
    vcpu.loadEntryState(config.entry);
    if (config.irqchip) vcpu.setMpState(KVM_MP_STATE_RUNNABLE);
  } else if (config.irqchip) {
    vcpu.setMpState(KVM_MP_STATE_UNINITIALIZED);
  }
}
