/**
 * The KVM user-space ABI for x86-64: ioctl request numbers, exit reasons and the binary layout of
 * the structures, as typed encoders and decoders over Uint8Array/DataView.
 *
 * Sources: Documentation/virt/kvm/api.rst (linux-doc-6.1, `_sources/virt/kvm/api.rst.txt`) for the
 * semantics, and the uapi headers <linux/kvm.h> and <asm/kvm.h> (linux-libc-dev) for the numbers
 * and offsets; every number below was checked against a C program compiled with those headers
 * (sizeof and offsetof of each structure, the _IO/_IOR/_IOW/_IOWR values).
 */

// ---- ioctl numbers: _IO(KVMIO=0xAE, nr), _IOR/_IOW/_IOWR with the structure size ----
/** System ioctls (on the /dev/kvm fd). */
export const KVM_GET_API_VERSION = 0xae00;
export const KVM_CREATE_VM = 0xae01;
export const KVM_GET_MSR_INDEX_LIST = 0xc004ae02;
export const KVM_CHECK_EXTENSION = 0xae03;
export const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
export const KVM_GET_SUPPORTED_CPUID = 0xc008ae05;
/** VM ioctls. */
export const KVM_CREATE_VCPU = 0xae41;
export const KVM_SET_USER_MEMORY_REGION = 0x4020ae46;
export const KVM_SET_TSS_ADDR = 0xae47;
export const KVM_SET_IDENTITY_MAP_ADDR = 0x4008ae48;
export const KVM_CREATE_IRQCHIP = 0xae60;
export const KVM_IRQ_LINE = 0x4008ae61;
export const KVM_IRQ_LINE_STATUS = 0xc008ae67;
export const KVM_IRQFD = 0x4020ae76;
export const KVM_CREATE_PIT2 = 0x4040ae77;
export const KVM_IOEVENTFD = 0x4040ae79;
export const KVM_SIGNAL_MSI = 0x4020aea5;
/** vCPU ioctls. */
export const KVM_RUN = 0xae80;
export const KVM_GET_REGS = 0x8090ae81;
export const KVM_SET_REGS = 0x4090ae82;
export const KVM_GET_SREGS = 0x8138ae83;
export const KVM_SET_SREGS = 0x4138ae84;
export const KVM_GET_MSRS = 0xc008ae88;
export const KVM_SET_MSRS = 0x4008ae89;
export const KVM_GET_FPU = 0x81a0ae8c;
export const KVM_SET_FPU = 0x41a0ae8d;
export const KVM_GET_LAPIC = 0x8400ae8e;
export const KVM_SET_LAPIC = 0x4400ae8f;
export const KVM_SET_CPUID2 = 0x4008ae90;
export const KVM_GET_MP_STATE = 0x8004ae98;
export const KVM_SET_MP_STATE = 0x4004ae99;

/** The one API version this ABI describes (api.rst 4.1: "Applications should refuse to run if ... returns a value other than 12"). */
export const KVM_API_VERSION = 12;

/** KVM_CHECK_EXTENSION capabilities used by Vessel. */
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_IRQFD = 0x20;
export const KVM_CAP_PIT2 = 0x21;
export const KVM_CAP_IOEVENTFD = 0x24;
export const KVM_CAP_MAX_VCPUS = 0x42;
export const KVM_CAP_IMMEDIATE_EXIT = 0x88;

// ---- exit reasons (kvm_run.exit_reason) ----
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_SET_TPR = 11;
export const KVM_EXIT_TPR_ACCESS = 12;
export const KVM_EXIT_NMI = 16;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;

/** Names of exit reasons, for statistics ("io", "mmio", "hlt", ...). */
export const EXIT_REASON_NAMES: Readonly<Record<number, string>> = {
  0: "unknown",
  1: "exception",
  2: "io",
  3: "hypercall",
  4: "debug",
  5: "hlt",
  6: "mmio",
  7: "irq_window_open",
  8: "shutdown",
  9: "fail_entry",
  10: "intr",
  11: "set_tpr",
  12: "tpr_access",
  16: "nmi",
  17: "internal_error",
  24: "system_event",
};

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;
export const KVM_INTERNAL_ERROR_EMULATION = 1;
export const KVM_INTERNAL_ERROR_SIMUL_EX = 2;
export const KVM_INTERNAL_ERROR_DELIVERY_EV = 3;

/** kvm_mp_state.mp_state values (api.rst 4.38). */
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;
export const KVM_MP_STATE_INIT_RECEIVED = 2;
export const KVM_MP_STATE_HALTED = 3;
export const KVM_MP_STATE_SIPI_RECEIVED = 4;

export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1;
export const KVM_IOEVENTFD_FLAG_PIO = 2;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 4;
export const KVM_IRQFD_FLAG_DEASSIGN = 1;
export const KVM_PIT_SPEAKER_DUMMY = 1;

// ---- struct kvm_run (the mmap'ed area of a vCPU), offsets of the fields Vessel uses ----
/**
 * struct kvm_run {
 *   0  __u8 request_interrupt_window; 1 __u8 immediate_exit; 2 __u8 padding1[6];
 *   8  __u32 exit_reason; 12 __u8 ready_for_interrupt_injection; 13 __u8 if_flag; 14 __u16 flags;
 *   16 __u64 cr8; 24 __u64 apic_base;
 *   32 union { io, mmio, internal, system_event, fail_entry, ... } (256 bytes)
 * }; io data lives at kvm_run + io.data_offset.
 */
export const RUN_REQUEST_INTERRUPT_WINDOW = 0;
export const RUN_IMMEDIATE_EXIT = 1;
export const RUN_EXIT_REASON = 8;
export const RUN_READY_FOR_INTERRUPT_INJECTION = 12;
export const RUN_IF_FLAG = 13;
/** io: 32 __u8 direction; 33 __u8 size; 34 __u16 port; 36 __u32 count; 40 __u64 data_offset. */
export const RUN_IO_DIRECTION = 32;
export const RUN_IO_SIZE = 33;
export const RUN_IO_PORT = 34;
export const RUN_IO_COUNT = 36;
export const RUN_IO_DATA_OFFSET = 40;
/** mmio: 32 __u64 phys_addr; 40 __u8 data[8]; 48 __u32 len; 52 __u8 is_write. */
export const RUN_MMIO_PHYS_ADDR = 32;
export const RUN_MMIO_DATA = 40;
export const RUN_MMIO_LEN = 48;
export const RUN_MMIO_IS_WRITE = 52;
/** internal: 32 __u32 suberror; 36 __u32 ndata; 40 __u64 data[16]. */
export const RUN_INTERNAL_SUBERROR = 32;
export const RUN_INTERNAL_NDATA = 36;
export const RUN_INTERNAL_DATA = 40;
/** system_event: 32 __u32 type; 36 __u32 ndata; 40 __u64 data[16] (flags in older headers). */
export const RUN_SYSTEM_EVENT_TYPE = 32;
export const RUN_SYSTEM_EVENT_FLAGS = 40;
/** fail_entry: 32 __u64 hardware_entry_failure_reason; 40 __u32 cpu. */
export const RUN_FAIL_ENTRY_REASON = 32;
export const RUN_FAIL_ENTRY_CPU = 40;
/** ex (KVM_EXIT_EXCEPTION): 32 __u32 exception; 36 __u32 error_code. */
export const RUN_EX_EXCEPTION = 32;
export const RUN_EX_ERROR_CODE = 36;

// ---- struct kvm_regs (144 bytes): 18 __u64 in this order ----
export const REG_NAMES = [
  "rax",
  "rbx",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "rsp",
  "rbp",
  "r8",
  "r9",
  "r10",
  "r11",
  "r12",
  "r13",
  "r14",
  "r15",
  "rip",
  "rflags",
] as const;
export type RegName = (typeof REG_NAMES)[number];
/** General registers as bigints (64-bit values). */
export type KvmRegs = Record<RegName, bigint>;
export const KVM_REGS_SIZE = 144;

export function encodeRegs(regs: KvmRegs, out = new Uint8Array(KVM_REGS_SIZE)): Uint8Array {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  REG_NAMES.forEach((n, i) => {
    dv.setBigUint64(i * 8, BigInt.asUintN(64, regs[n]), true);
  });
  return out;
}

export function decodeRegs(buf: Uint8Array): KvmRegs {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const r = {} as KvmRegs;
  REG_NAMES.forEach((n, i) => {
    r[n] = dv.getBigUint64(i * 8, true);
  });
  return r;
}

// ---- struct kvm_segment (24 bytes), kvm_dtable (16), kvm_sregs (312) ----
/**
 * struct kvm_segment { __u64 base; __u32 limit; __u16 selector; __u8 type, present, dpl, db, s, l,
 * g, avl; __u8 unusable; __u8 padding; }
 */
export interface KvmSegment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}
/** struct kvm_dtable { __u64 base; __u16 limit; __u16 padding[3]; } */
export interface KvmDtable {
  base: bigint;
  limit: number;
}
/**
 * struct kvm_sregs { kvm_segment cs, ds, es, fs, gs, ss, tr, ldt (0..191); kvm_dtable gdt (192),
 * idt (208); __u64 cr0 (224), cr2, cr3, cr4, cr8, efer (264), apic_base (272);
 * __u64 interrupt_bitmap[4] (280) };
 */
export interface KvmSregs {
  cs: KvmSegment;
  ds: KvmSegment;
  es: KvmSegment;
  fs: KvmSegment;
  gs: KvmSegment;
  ss: KvmSegment;
  tr: KvmSegment;
  ldt: KvmSegment;
  gdt: KvmDtable;
  idt: KvmDtable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  interruptBitmap: [bigint, bigint, bigint, bigint];
}
export const KVM_SREGS_SIZE = 312;
const SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;

function encodeSegment(dv: DataView, off: number, s: KvmSegment): void {
  dv.setBigUint64(off, BigInt.asUintN(64, s.base), true);
  dv.setUint32(off + 8, s.limit >>> 0, true);
  dv.setUint16(off + 12, s.selector, true);
  const bytes = [s.type, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable, 0];
  bytes.forEach((b, i) => {
    dv.setUint8(off + 14 + i, b);
  });
}

function decodeSegment(dv: DataView, off: number): KvmSegment {
  const u8 = (i: number) => dv.getUint8(off + 14 + i);
  return {
    base: dv.getBigUint64(off, true),
    limit: dv.getUint32(off + 8, true),
    selector: dv.getUint16(off + 12, true),
    type: u8(0),
    present: u8(1),
    dpl: u8(2),
    db: u8(3),
    s: u8(4),
    l: u8(5),
    g: u8(6),
    avl: u8(7),
    unusable: u8(8),
  };
}

export function encodeSregs(s: KvmSregs, out = new Uint8Array(KVM_SREGS_SIZE)): Uint8Array {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (const [i, name] of SEGMENTS.entries()) encodeSegment(dv, i * 24, s[name]);
  dv.setBigUint64(192, s.gdt.base, true);
  dv.setUint16(200, s.gdt.limit, true);
  dv.setBigUint64(208, s.idt.base, true);
  dv.setUint16(216, s.idt.limit, true);
  const crs = [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apicBase, ...s.interruptBitmap];
  crs.forEach((v, i) => {
    dv.setBigUint64(224 + i * 8, BigInt.asUintN(64, v), true);
  });
  return out;
}

export function decodeSregs(buf: Uint8Array): KvmSregs {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const seg = (i: number) => decodeSegment(dv, i * 24);
  const q = (off: number) => dv.getBigUint64(off, true);
  return {
    cs: seg(0),
    ds: seg(1),
    es: seg(2),
    fs: seg(3),
    gs: seg(4),
    ss: seg(5),
    tr: seg(6),
    ldt: seg(7),
    gdt: { base: q(192), limit: dv.getUint16(200, true) },
    idt: { base: q(208), limit: dv.getUint16(216, true) },
    cr0: q(224),
    cr2: q(232),
    cr3: q(240),
    cr4: q(248),
    cr8: q(256),
    efer: q(264),
    apicBase: q(272),
    interruptBitmap: [q(280), q(288), q(296), q(304)],
  };
}

// ---- struct kvm_fpu (416 bytes) ----
/**
 * struct kvm_fpu { __u8 fpr[8][16] (0); __u16 fcw (128); __u16 fsw; __u8 ftwx (132); __u8 pad1;
 * __u16 last_opcode (134); __u64 last_ip (136); __u64 last_dp (144); __u8 xmm[16][16] (152);
 * __u32 mxcsr (408); __u32 pad2; }  ftwx is the abridged (FXSAVE) tag word: 1 bit per register.
 */
export interface KvmFpu {
  fpr: Uint8Array; // 8 x 16 bytes (80-bit values in the low 10 bytes)
  fcw: number;
  fsw: number;
  ftwx: number;
  lastOpcode: number;
  lastIp: bigint;
  lastDp: bigint;
  xmm: Uint8Array; // 16 x 16 bytes
  mxcsr: number;
}
export const KVM_FPU_SIZE = 416;

export function encodeFpu(f: KvmFpu, out = new Uint8Array(KVM_FPU_SIZE)): Uint8Array {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  out.set(f.fpr.subarray(0, 128), 0);
  dv.setUint16(128, f.fcw, true);
  dv.setUint16(130, f.fsw, true);
  dv.setUint8(132, f.ftwx);
  dv.setUint16(134, f.lastOpcode, true);
  dv.setBigUint64(136, f.lastIp, true);
  dv.setBigUint64(144, f.lastDp, true);
  out.set(f.xmm.subarray(0, 256), 152);
  dv.setUint32(408, f.mxcsr, true);
  return out;
}

export function decodeFpu(buf: Uint8Array): KvmFpu {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    fpr: buf.slice(0, 128),
    fcw: dv.getUint16(128, true),
    fsw: dv.getUint16(130, true),
    ftwx: dv.getUint8(132),
    lastOpcode: dv.getUint16(134, true),
    lastIp: dv.getBigUint64(136, true),
    lastDp: dv.getBigUint64(144, true),
    xmm: buf.slice(152, 408),
    mxcsr: dv.getUint32(408, true),
  };
}

// ---- struct kvm_cpuid2 { __u32 nent; __u32 padding; struct kvm_cpuid_entry2 entries[]; } ----
/**
 * struct kvm_cpuid_entry2 { __u32 function, index, flags, eax, ebx, ecx, edx; __u32 padding[3]; }
 * (40 bytes). flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 (index matters).
 */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;
export const KVM_CPUID_ENTRY2_SIZE = 40;
/** Upper bound on entries when asking KVM_GET_SUPPORTED_CPUID (E2BIG below it). */
export const KVM_MAX_CPUID_ENTRIES = 256;

export function encodeCpuid2(entries: readonly CpuidEntry[], capacity = entries.length): Uint8Array {
  const out = new Uint8Array(8 + capacity * KVM_CPUID_ENTRY2_SIZE);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, Math.max(capacity, entries.length), true);
  entries.forEach((e, i) => {
    const o = 8 + i * KVM_CPUID_ENTRY2_SIZE;
    const values = [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx];
    for (const [j, v] of values.entries()) dv.setUint32(o + j * 4, v >>> 0, true);
  });
  if (entries.length < capacity) dv.setUint32(0, capacity, true);
  return out;
}

export function decodeCpuid2(buf: Uint8Array): CpuidEntry[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getUint32(0, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + i * KVM_CPUID_ENTRY2_SIZE;
    const u = (j: number) => dv.getUint32(o + j * 4, true);
    out.push({ function: u(0), index: u(1), flags: u(2), eax: u(3), ebx: u(4), ecx: u(5), edx: u(6) });
  }
  return out;
}

// ---- struct kvm_msrs { __u32 nmsrs; __u32 pad; struct kvm_msr_entry { __u32 index; __u32 reserved; __u64 data; } entries[]; } ----
export interface MsrEntry {
  index: number;
  data: bigint;
}

export function encodeMsrs(entries: readonly MsrEntry[]): Uint8Array {
  const out = new Uint8Array(8 + entries.length * 16);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    dv.setUint32(8 + i * 16, e.index, true);
    dv.setBigUint64(16 + i * 16, BigInt.asUintN(64, e.data), true);
  });
  return out;
}

export function decodeMsrs(buf: Uint8Array): MsrEntry[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getUint32(0, true);
  const out: MsrEntry[] = [];
  for (let i = 0; i < n; i++)
    out.push({ index: dv.getUint32(8 + i * 16, true), data: dv.getBigUint64(16 + i * 16, true) });
  return out;
}

// ---- small fixed structures ----
/**
 * struct kvm_userspace_memory_region { __u32 slot; __u32 flags; __u64 guest_phys_addr;
 * __u64 memory_size; __u64 userspace_addr; } (32 bytes)
 */
export function encodeMemoryRegion(
  slot: number,
  flags: number,
  guestPhys: number,
  size: number,
  userAddr: bigint,
): Uint8Array {
  const out = new Uint8Array(32);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, slot, true);
  dv.setUint32(4, flags, true);
  dv.setBigUint64(8, BigInt(guestPhys), true);
  dv.setBigUint64(16, BigInt(size), true);
  dv.setBigUint64(24, userAddr, true);
  return out;
}

/** struct kvm_pit_config { __u32 flags; __u32 pad[15]; } (64 bytes) */
export function encodePitConfig(flags: number): Uint8Array {
  const out = new Uint8Array(64);
  new DataView(out.buffer).setUint32(0, flags, true);
  return out;
}

/** struct kvm_irq_level { union { __u32 irq; __s32 status; }; __u32 level; } (8 bytes) */
export function encodeIrqLevel(irq: number, level: number): Uint8Array {
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, irq, true);
  dv.setUint32(4, level, true);
  return out;
}

/** struct kvm_irqfd { __u32 fd; __u32 gsi; __u32 flags; __u32 resamplefd; __u8 pad[16]; } (32 bytes) */
export function encodeIrqfd(fd: number, gsi: number, flags = 0, resamplefd = 0): Uint8Array {
  const out = new Uint8Array(32);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, fd, true);
  dv.setUint32(4, gsi, true);
  dv.setUint32(8, flags, true);
  dv.setUint32(12, resamplefd, true);
  return out;
}

/**
 * struct kvm_ioeventfd { __u64 datamatch; __u64 addr; __u32 len; __s32 fd; __u32 flags;
 * __u8 pad[36]; } (64 bytes)
 */
export function encodeIoeventfd(
  addr: number,
  len: number,
  fd: number,
  flags: number,
  datamatch = 0n,
): Uint8Array {
  const out = new Uint8Array(64);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, datamatch, true);
  dv.setBigUint64(8, BigInt(addr), true);
  dv.setUint32(16, len, true);
  dv.setInt32(20, fd, true);
  dv.setUint32(24, flags, true);
  return out;
}

/** struct kvm_mp_state { __u32 mp_state; } */
export function encodeMpState(state: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, state, true);
  return out;
}

/**
 * struct kvm_lapic_state { char regs[1024]; }: the local APIC register page as the guest sees it
 * at 0xfee00000, each 32-bit register at its architectural offset (Intel SDM vol. 3, table 11-1).
 */
export const KVM_LAPIC_STATE_SIZE = 1024;
export const APIC_ID = 0x20;
export const APIC_SPIV = 0xf0;
export const APIC_LVT0 = 0x350;
export const APIC_LVT1 = 0x360;
/** LVT delivery modes (bits 10:8). */
export const APIC_MODE_FIXED = 0;
export const APIC_MODE_NMI = 4;
export const APIC_MODE_EXTINT = 7;

// ---- MSR indexes (Intel SDM vol. 4) used at boot ----
export const MSR_IA32_SYSENTER_CS = 0x174;
export const MSR_IA32_SYSENTER_ESP = 0x175;
export const MSR_IA32_SYSENTER_EIP = 0x176;
export const MSR_IA32_TSC = 0x10;
export const MSR_IA32_MISC_ENABLE = 0x1a0;
export const MSR_IA32_MISC_ENABLE_FAST_STRING = 1n;
export const MSR_STAR = 0xc0000081;
export const MSR_LSTAR = 0xc0000082;
export const MSR_CSTAR = 0xc0000083;
export const MSR_SYSCALL_MASK = 0xc0000084;
export const MSR_KERNEL_GS_BASE = 0xc0000102;
export const MSR_MTRR_DEF_TYPE = 0x2ff;
