/**
 * FAKE KVM, FOR TESTS ONLY. It is not an emulator and runs no guest code: it stands in for the
 * KVM ioctl interface (src/engines/kvm/kvm_device.ts) on hosts without /dev/kvm, so the engine's
 * own code runs: KvmSystem, KvmVm, KvmVcpu, the run loop, the vCPU worker threads, the mailbox
 * and the watchdog.
 *
 * What it does:
 * - answers the system, VM and vCPU ioctls the engine issues (api.rst section 4) with fixed
 *   values (API version 12, the capabilities the engine checks, a small supported CPUID list),
 *   keeps what KVM_SET_{REGS,SREGS,FPU,LAPIC,MP_STATE,MSRS} are given and gives it back to the
 *   matching KVM_GET_*, and refuses what it does not know with ENOTTY (unknown fd: EBADF);
 * - maps each vCPU's kvm_run area as real anonymous host memory, so the engine reads and writes
 *   it exactly as it does the kernel's mapping, and vcpu_link.ts kicks it the same way (it sets
 *   immediate_exit there and signals the thread);
 * - on KVM_RUN, replays the vCPU's next scripted exit into that page, with the layout of
 *   src/sys/kvm_abi.ts (RUN_* offsets; port data at offset 4096, where KVM puts it). After a port
 *   IN or an MMIO read, the next KVM_RUN reads the answer back from the page, records it and, if
 *   the script says what it expects, checks it;
 * - records every ioctl (with the thread it came from and the decoded argument that matters) in
 *   shared memory, so a test can assert the order and content of what the engine asked.
 *
 * Its state is in SharedArrayBuffers: a vCPU worker thread rebuilds the same fake from
 * `transfer` (kvm_device.ts kvmDeviceFor), so secondary vCPUs replay their own scripts and their
 * ioctls land in the same record.
 */
import { threadId } from "node:worker_threads";
import {
  APIC_LVT0,
  APIC_LVT1,
  type CpuidEntry,
  decodeCpuid2,
  decodeMsrs,
  decodeRegs,
  decodeSregs,
  KVM_API_VERSION,
  KVM_CAP_IRQCHIP,
  KVM_CAP_MAX_VCPUS,
  KVM_CAP_NR_VCPUS,
  KVM_CAP_USER_MEMORY,
  KVM_CHECK_EXTENSION,
  KVM_CPUID_ENTRY2_SIZE,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_IN,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_FPU_SIZE,
  KVM_GET_API_VERSION,
  KVM_GET_FPU,
  KVM_GET_LAPIC,
  KVM_GET_MP_STATE,
  KVM_GET_MSRS,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_IOEVENTFD,
  KVM_IRQ_LINE,
  KVM_IRQFD,
  KVM_LAPIC_STATE_SIZE,
  KVM_REGS_SIZE,
  KVM_SET_CPUID2,
  KVM_SET_FPU,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_LAPIC,
  KVM_SET_MP_STATE,
  KVM_SET_MSRS,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SREGS_SIZE,
  RUN_EXIT_REASON,
  RUN_FAIL_ENTRY_CPU,
  RUN_FAIL_ENTRY_REASON,
  RUN_IMMEDIATE_EXIT,
  RUN_INTERNAL_DATA,
  RUN_INTERNAL_NDATA,
  RUN_INTERNAL_SUBERROR,
  RUN_IO_COUNT,
  RUN_IO_DATA_OFFSET,
  RUN_IO_DIRECTION,
  RUN_IO_PORT,
  RUN_IO_SIZE,
  RUN_MMIO_DATA,
  RUN_MMIO_IS_WRITE,
  RUN_MMIO_LEN,
  RUN_MMIO_PHYS_ADDR,
  RUN_SYSTEM_EVENT_TYPE,
} from "../../../src/sys/kvm_abi.js";
import { mapAnonymous, unmap, viewHostMemory } from "../../../src/sys/mman.js";
import { SysError } from "../../../src/sys/sys_error.js";
import type { KvmDevice, KvmDeviceTransfer } from "../../../src/engines/kvm/kvm_device.js";

/** One scripted VM exit (what the guest "did" on this KVM_RUN). */
export type FakeExit =
  /** OUT/OUTS: `data` are the `count` items written, each `size` bytes. */
  | { exit: "io_out"; port: number; size: 1 | 2 | 4; data: number[] }
  /** IN/INS of `count` items (default 1); the answers are read back on the next KVM_RUN. */
  | { exit: "io_in"; port: number; size: 1 | 2 | 4; count?: number; expect?: number[] }
  /** An MMIO store of `data` (1 to 8 bytes, little-endian order as in kvm_run.mmio.data). */
  | { exit: "mmio_write"; addr: number; data: number[] }
  /** An MMIO load of `len` bytes; the bytes are read back on the next KVM_RUN. */
  | { exit: "mmio_read"; addr: number; len: number; expect?: number[] }
  | { exit: "hlt" }
  | { exit: "shutdown" }
  | { exit: "internal_error"; suberror: number; data?: number[] }
  | { exit: "fail_entry"; reason: number; cpu: number }
  | { exit: "system_event"; type: number }
  /** Any exit reason number, e.g. one the engine does not handle. */
  | { exit: "reason"; reason: number }
  /**
   * The guest runs without exiting (a `jmp $`): KVM_RUN returns -EINTR only when the vCPU is
   * kicked (immediate_exit set). The step is not used up: the guest is still spinning afterwards.
   */
  | { exit: "spin" }
  /** KVM_RUN fails with this errno (e.g. EFAULT = 14). */
  | { exit: "error"; errno: number };

/** One ioctl the fake was given, as recorded. */
export interface FakeCall {
  /** "system", "vm" or "vcpu<N>". */
  fd: string;
  /** The request's name, from its number (not from the label the caller passed). */
  name: string;
  /** worker_threads threadId of the caller (0 = the main thread). */
  thread: number;
  /** What the argument said, for the requests where it matters (decoded). */
  arg?: unknown;
}

export interface FakeKvmOptions {
  /** Exits per vCPU id, replayed in order; a vCPU without a script fails its first KVM_RUN. */
  scripts: Record<number, FakeExit[]>;
  /** The path the fake "exists" at (default /dev/kvm: it stands in for it, it never opens it). */
  path?: string;
  /** KVM_GET_API_VERSION's answer (default 12). */
  apiVersion?: number;
  /** KVM_CHECK_EXTENSION answers over the defaults (USER_MEMORY, IRQCHIP: 1; NR/MAX_VCPUS: maxVcpus). */
  caps?: Record<number, number>;
  maxVcpus?: number;
  /** open() fails with this errno (e.g. EACCES = 13). */
  openErrno?: number;
  /** KVM_GET_SUPPORTED_CPUID's answer (default: FAKE_SUPPORTED_CPUID). */
  supportedCpuid?: CpuidEntry[];
}

/** The vendor string of the fake's CPUID leaf 0 (12 bytes), so no one mistakes it for a CPU. */
export const FAKE_VENDOR = "FakeKvmTests";

/** Leaf 0 (vendor), leaf 1 (APIC id 0, no hypervisor bit: the engine must set it), leaf 0xb. */
export const FAKE_SUPPORTED_CPUID: CpuidEntry[] = (() => {
  const v = Buffer.from(FAKE_VENDOR, "latin1");
  return [
    {
      function: 0,
      index: 0,
      flags: 0,
      eax: 0xb,
      ebx: v.readUInt32LE(0),
      edx: v.readUInt32LE(4),
      ecx: v.readUInt32LE(8),
    },
    { function: 1, index: 0, flags: 0, eax: 0x000306a9, ebx: 0x00000800, ecx: 0x00000001, edx: 0x0780_0000 },
    { function: 0xb, index: 0, flags: 1, eax: 1, ebx: 1, ecx: 0x100, edx: 0 },
  ];
})();

/** What KVM_GET_VCPU_MMAP_SIZE answers: three pages, as x86 KVM does (run, PIO data, coalesced MMIO). */
export const FAKE_VCPU_MMAP_SIZE = 0x3000;
/** Where port I/O data is put in the run area (KVM_PIO_PAGE_OFFSET = 1 page, as in the kernel). */
export const FAKE_PIO_DATA_OFFSET = 0x1000;

const EBADF = 9;
const EINTR = 4;
const ENOTTY = 25;
const EEXIST = 17;
const EINVAL = 22;
const E2BIG = 7;
const ENOENT = 2;

/** Request numbers the fake knows, by name (the log names requests by number). */
const REQUEST_NAMES = new Map<number, string>([
  [KVM_GET_API_VERSION, "KVM_GET_API_VERSION"],
  [KVM_CREATE_VM, "KVM_CREATE_VM"],
  [KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION"],
  [KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE"],
  [KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID"],
  [KVM_CREATE_VCPU, "KVM_CREATE_VCPU"],
  [KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION"],
  [KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR"],
  [KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR"],
  [KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP"],
  [KVM_CREATE_PIT2, "KVM_CREATE_PIT2"],
  [KVM_IRQ_LINE, "KVM_IRQ_LINE"],
  [KVM_IRQFD, "KVM_IRQFD"],
  [KVM_IOEVENTFD, "KVM_IOEVENTFD"],
  [KVM_GET_REGS, "KVM_GET_REGS"],
  [KVM_SET_REGS, "KVM_SET_REGS"],
  [KVM_GET_SREGS, "KVM_GET_SREGS"],
  [KVM_SET_SREGS, "KVM_SET_SREGS"],
  [KVM_GET_MSRS, "KVM_GET_MSRS"],
  [KVM_SET_MSRS, "KVM_SET_MSRS"],
  [KVM_GET_FPU, "KVM_GET_FPU"],
  [KVM_SET_FPU, "KVM_SET_FPU"],
  [KVM_GET_LAPIC, "KVM_GET_LAPIC"],
  [KVM_SET_LAPIC, "KVM_SET_LAPIC"],
  [KVM_SET_CPUID2, "KVM_SET_CPUID2"],
  [KVM_GET_MP_STATE, "KVM_GET_MP_STATE"],
  [KVM_SET_MP_STATE, "KVM_SET_MP_STATE"],
]);

/** vCPU state that GET_* gives back as SET_* left it (zeros before), by [get, set, size]. */
const ECHOED: [number, number, number][] = [
  [KVM_GET_REGS, KVM_SET_REGS, KVM_REGS_SIZE],
  [KVM_GET_SREGS, KVM_SET_SREGS, KVM_SREGS_SIZE],
  [KVM_GET_FPU, KVM_SET_FPU, KVM_FPU_SIZE],
  [KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_LAPIC_STATE_SIZE],
  [KVM_GET_MP_STATE, KVM_SET_MP_STATE, 4],
];

// Shared words (Int32Array over `state`): fds are FD_BASE + slot; each slot has a kind and a vCPU id.
const FD_BASE = 1000;
const FD_SLOTS = 64;
const W_NEXT_FD = 0;
const W_LOG_CURSOR = 1;
const W_LOG_DROPPED = 2;
const W_STEP = 8; // + vCPU id: index of its next script step
const W_FD_KIND = 8 + FD_SLOTS;
const W_FD_VCPU = 8 + 2 * FD_SLOTS;
const STATE_WORDS = 8 + 3 * FD_SLOTS;
const KIND_FREE = 0;
const KIND_SYSTEM = 1;
const KIND_VM = 2;
const KIND_VCPU = 3;
const LOG_BYTES = 1 << 20;
/** A spinning vCPU nobody kicks for this long is a hung test, not a guest: fail it. */
const SPIN_GIVE_UP_MS = 30_000;

interface SharedState {
  options: FakeKvmOptions;
  state: SharedArrayBuffer;
  /** BigInt64 per vCPU id: host address of its kvm_run mapping (0 = not mapped). */
  runs: SharedArrayBuffer;
  /** Length-prefixed JSON records of FakeCall (see record()). */
  log: SharedArrayBuffer;
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/**
 * A fake of the KVM ioctl interface for tests (see the file's header). One per VM under test;
 * pass it as KvmEngineOptions.kvm (or KvmSystem.open(path, fake)).
 */
export class FakeKvm implements KvmDevice {
  private readonly shared: SharedState;
  private readonly words: Int32Array;
  private readonly runs: BigInt64Array;
  private readonly logBytes: Uint8Array;
  private readonly logWords: Int32Array;
  /** Per-thread: what SET_* left for each vCPU fd (a vCPU's ioctls come from one thread). */
  private readonly kept = new Map<string, Uint8Array>();
  /** Per-thread: the step whose answer the next KVM_RUN reads back, by vCPU id. */
  private readonly pendingRead = new Map<number, FakeExit>();
  private spinWait = new Int32Array(new SharedArrayBuffer(4));

  constructor(options: FakeKvmOptions | SharedState) {
    this.shared =
      "scripts" in options
        ? {
            options,
            state: new SharedArrayBuffer(STATE_WORDS * 4),
            runs: new SharedArrayBuffer(8 * FD_SLOTS),
            log: new SharedArrayBuffer(LOG_BYTES),
          }
        : options;
    this.words = new Int32Array(this.shared.state);
    this.runs = new BigInt64Array(this.shared.runs);
    this.logBytes = new Uint8Array(this.shared.log);
    this.logWords = new Int32Array(this.shared.log);
  }

  get transfer(): KvmDeviceTransfer {
    return { module: import.meta.url, data: this.shared };
  }

  private get options(): FakeKvmOptions {
    return this.shared.options;
  }

  // ---- the record of ioctls ----

  private record(call: Omit<FakeCall, "thread">): void {
    const bytes = Buffer.from(JSON.stringify({ ...call, thread: threadId }));
    const at = Atomics.add(this.words, W_LOG_CURSOR, recordBytes(bytes.length));
    if (at + recordBytes(bytes.length) > LOG_BYTES) {
      Atomics.add(this.words, W_LOG_DROPPED, 1);
      return;
    }
    this.logBytes.set(bytes, at + 4);
    // The length goes last: a reader stops at a zero length (a record still being written).
    Atomics.store(this.logWords, at / 4, bytes.length);
  }

  /** Every ioctl so far, in the order they were made (across threads: in the order recorded). */
  calls(): FakeCall[] {
    const out: FakeCall[] = [];
    const end = Math.min(Atomics.load(this.words, W_LOG_CURSOR), LOG_BYTES);
    for (let at = 0; at + 4 <= end; ) {
      const len = Atomics.load(this.logWords, at / 4);
      if (len === 0) break;
      out.push(JSON.parse(Buffer.from(this.logBytes.subarray(at + 4, at + 4 + len)).toString()) as FakeCall);
      at += recordBytes(len);
    }
    if (Atomics.load(this.words, W_LOG_DROPPED) > 0) throw new Error("fake KVM: the ioctl record overflowed");
    return out;
  }

  /** The calls of one fd ("system", "vm", "vcpu0", ...). */
  callsOf(fd: string): FakeCall[] {
    return this.calls().filter((c) => c.fd === fd);
  }

  /** The decoded argument of the first `name` ioctl on `fd`; throws if there was none. */
  argOf(fd: string, name: string): unknown {
    const call = this.callsOf(fd).find((c) => c.name === name);
    if (call === undefined) throw new Error(`fake KVM: ${fd} was given no ${name}`);
    return call.arg;
  }

  /** The fds open now (the engine closes every one it opened, also when it fails half-way). */
  openFds(): string[] {
    const out: string[] = [];
    for (let s = 0; s < FD_SLOTS; s++)
      if (this.kindOf(FD_BASE + s) !== KIND_FREE) out.push(this.fdName(FD_BASE + s));
    return out;
  }

  /** How many script steps vCPU `id` has used up. */
  stepsTaken(id: number): number {
    return Atomics.load(this.words, W_STEP + id);
  }

  // ---- fds ----

  private newFd(kind: number, vcpu = 0): number {
    const slot = Atomics.add(this.words, W_NEXT_FD, 1);
    if (slot >= FD_SLOTS) throw new SysError("fake KVM: fd", 24 /* EMFILE */);
    Atomics.store(this.words, W_FD_VCPU + slot, vcpu);
    Atomics.store(this.words, W_FD_KIND + slot, kind);
    return FD_BASE + slot;
  }

  private kindOf(fd: number): number {
    const slot = fd - FD_BASE;
    return slot >= 0 && slot < FD_SLOTS ? Atomics.load(this.words, W_FD_KIND + slot) : KIND_FREE;
  }

  private vcpuOf(fd: number): number {
    return Atomics.load(this.words, W_FD_VCPU + fd - FD_BASE);
  }

  private fdName(fd: number): string {
    const kind = this.kindOf(fd);
    return kind === KIND_SYSTEM ? "system" : kind === KIND_VM ? "vm" : `vcpu${this.vcpuOf(fd)}`;
  }

  // ---- KvmDevice ----

  exists(path: string): boolean {
    return path === (this.options.path ?? "/dev/kvm");
  }

  open(path: string): number {
    if (!this.exists(path)) throw new SysError(`open(${path})`, ENOENT);
    if (this.options.openErrno !== undefined) throw new SysError(`open(${path})`, this.options.openErrno);
    return this.newFd(KIND_SYSTEM);
  }

  close(fd: number): void {
    if (this.kindOf(fd) === KIND_FREE) throw new SysError(`close(${fd})`, EBADF);
    Atomics.store(this.words, W_FD_KIND + fd - FD_BASE, KIND_FREE);
  }

  ioctlInt(fd: number, request: number, arg: number, label: string): number {
    return this.ioctl(fd, request, arg, null, label);
  }

  ioctlPtr(fd: number, request: number, arg: Uint8Array | null, label: string): number {
    return this.ioctl(fd, request, 0, arg, label);
  }

  private ioctl(fd: number, request: number, int: number, buf: Uint8Array | null, label: string): number {
    const kind = this.kindOf(fd);
    if (kind === KIND_FREE) throw new SysError(`ioctl(${label})`, EBADF);
    const name = REQUEST_NAMES.get(request) ?? hex(request);
    const fail = (errno: number): never => {
      throw new SysError(`ioctl(${label})`, errno);
    };
    const need = (size: number): Uint8Array => {
      if (buf === null || buf.length < size) fail(EINVAL);
      return buf as Uint8Array;
    };
    const log = (arg?: unknown) =>
      this.record({ fd: this.fdName(fd), name, ...(arg === undefined ? {} : { arg }) });
    if (kind === KIND_SYSTEM) {
      switch (request) {
        case KVM_GET_API_VERSION:
          log();
          return this.options.apiVersion ?? KVM_API_VERSION;
        case KVM_CHECK_EXTENSION: {
          log({ cap: int });
          const max = this.options.maxVcpus ?? 4;
          const defaults: Record<number, number> = {
            [KVM_CAP_USER_MEMORY]: 1,
            [KVM_CAP_IRQCHIP]: 1,
            [KVM_CAP_NR_VCPUS]: max,
            [KVM_CAP_MAX_VCPUS]: max,
          };
          return this.options.caps?.[int] ?? defaults[int] ?? 0;
        }
        case KVM_GET_VCPU_MMAP_SIZE:
          log();
          return FAKE_VCPU_MMAP_SIZE;
        case KVM_GET_SUPPORTED_CPUID: {
          const b = need(8);
          const entries = this.options.supportedCpuid ?? FAKE_SUPPORTED_CPUID;
          const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
          log({ capacity: dv.getUint32(0, true) });
          if (dv.getUint32(0, true) < entries.length || b.length < 8 + entries.length * KVM_CPUID_ENTRY2_SIZE)
            fail(E2BIG);
          dv.setUint32(0, entries.length, true);
          entries.forEach((e, i) => {
            const values = [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx];
            for (const [j, v] of values.entries())
              dv.setUint32(8 + i * KVM_CPUID_ENTRY2_SIZE + j * 4, v >>> 0, true);
          });
          return 0;
        }
        case KVM_CREATE_VM:
          log();
          return this.newFd(KIND_VM);
        default:
          log();
          return fail(ENOTTY);
      }
    }
    if (kind === KIND_VM) {
      switch (request) {
        case KVM_CREATE_VCPU: {
          log({ id: int });
          if (int < 0 || int >= (this.options.maxVcpus ?? 4)) fail(EINVAL);
          for (let s = 0; s < FD_SLOTS; s++) {
            if (
              Atomics.load(this.words, W_FD_KIND + s) === KIND_VCPU &&
              Atomics.load(this.words, W_FD_VCPU + s) === int
            )
              fail(EEXIST);
          }
          return this.newFd(KIND_VCPU, int);
        }
        case KVM_SET_USER_MEMORY_REGION: {
          const dv = view(need(32));
          log({
            slot: dv.getUint32(0, true),
            guestPhys: hex(dv.getBigUint64(8, true)),
            size: hex(dv.getBigUint64(16, true)),
          });
          return 0;
        }
        case KVM_SET_TSS_ADDR:
          log({ addr: hex(int) });
          return 0;
        case KVM_SET_IDENTITY_MAP_ADDR:
          log({ addr: hex(view(need(8)).getBigUint64(0, true)) });
          return 0;
        case KVM_IRQ_LINE: {
          const dv = view(need(8));
          log({ gsi: dv.getUint32(0, true), level: dv.getUint32(4, true) });
          return 0;
        }
        case KVM_CREATE_IRQCHIP:
        case KVM_CREATE_PIT2:
        case KVM_IRQFD:
        case KVM_IOEVENTFD:
          log();
          return 0;
        default:
          log();
          return fail(ENOTTY);
      }
    }
    // A vCPU fd.
    const key = (get: number) => `${fd}:${get}`;
    for (const [get, set, size] of ECHOED) {
      if (request === set) {
        const b = need(size);
        log(describeSet(request, b));
        this.kept.set(key(get), b.slice(0, size));
        return 0;
      }
      if (request === get) {
        log();
        need(size).set(this.kept.get(key(get)) ?? new Uint8Array(size));
        return 0;
      }
    }
    switch (request) {
      case KVM_SET_CPUID2: {
        const entries = decodeCpuid2(need(8));
        log({ entries });
        return 0;
      }
      case KVM_SET_MSRS: {
        const msrs = decodeMsrs(need(8));
        log({ msrs: msrs.map((m) => ({ index: hex(m.index), data: hex(m.data) })) });
        for (const m of msrs) this.kept.set(`${fd}:msr:${m.index}`, bigintBytes(m.data));
        return msrs.length;
      }
      case KVM_GET_MSRS: {
        const b = need(8);
        const dv = view(b);
        const n = dv.getUint32(0, true);
        log({ indexes: decodeMsrs(b).map((m) => hex(m.index)) });
        for (let i = 0; i < n; i++) {
          const kept = this.kept.get(`${fd}:msr:${dv.getUint32(8 + i * 16, true)}`);
          dv.setBigUint64(16 + i * 16, kept === undefined ? 0n : view(kept).getBigUint64(0, true), true);
        }
        return n;
      }
      default:
        log();
        return fail(ENOTTY);
    }
  }

  mmapRun(fd: number, size: number): bigint {
    if (this.kindOf(fd) !== KIND_VCPU) throw new SysError(`mmap(${size} bytes, fd ${fd})`, EINVAL);
    const address = mapAnonymous(size);
    Atomics.store(this.runs, this.vcpuOf(fd), address);
    return address;
  }

  unmapRun(address: bigint, size: number): void {
    unmap(address, size);
  }

  /** KVM_RUN: replays the vCPU's next scripted exit into its kvm_run area. */
  run(fd: number): number {
    if (this.kindOf(fd) !== KIND_VCPU) return -EBADF;
    const id = this.vcpuOf(fd);
    const address = Atomics.load(this.runs, id);
    if (address === 0n) throw new Error(`fake KVM: KVM_RUN on vCPU ${id} before its kvm_run was mapped`);
    const run = new Uint8Array(viewHostMemory(address, FAKE_VCPU_MMAP_SIZE));
    const rv = view(run);
    const readBack = this.readBack(id, run, rv);
    const entry = (what: string) =>
      this.record({
        fd: `vcpu${id}`,
        name: "KVM_RUN",
        arg: { exit: what, ...(readBack === undefined ? {} : { readBack }) },
      });
    // api.rst (kvm_run.immediate_exit): set on entry, KVM_RUN returns -EINTR at once.
    if (Atomics.load(run, RUN_IMMEDIATE_EXIT) !== 0) {
      entry("EINTR");
      return -EINTR;
    }
    const script = this.options.scripts[id] ?? [];
    const index = Atomics.load(this.words, W_STEP + id);
    const step = script[index];
    if (step === undefined) {
      throw new Error(
        `fake KVM: vCPU ${id} called KVM_RUN after the end of its script (${script.length} exits)`,
      );
    }
    if (step.exit === "spin") {
      entry("spin");
      const giveUp = Date.now() + SPIN_GIVE_UP_MS;
      // A kick sets immediate_exit, then signals the thread (vcpu_link.ts): look at the flag.
      while (Atomics.load(run, RUN_IMMEDIATE_EXIT) === 0) {
        if (Date.now() > giveUp) throw new Error(`fake KVM: vCPU ${id} spun for 30 s and nobody kicked it`);
        Atomics.wait(this.spinWait, 0, 0, 1);
      }
      return -EINTR;
    }
    Atomics.store(this.words, W_STEP + id, index + 1);
    entry(step.exit);
    if (step.exit === "error") return -step.errno;
    run.fill(0, RUN_EXIT_REASON, RUN_EXIT_REASON + 4);
    run.fill(0, 32, 32 + 256);
    const reason = (r: number) => rv.setUint32(RUN_EXIT_REASON, r, true);
    switch (step.exit) {
      case "io_out":
      case "io_in": {
        const out = step.exit === "io_out";
        const count = out ? step.data.length : (step.count ?? 1);
        reason(KVM_EXIT_IO);
        run[RUN_IO_DIRECTION] = out ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN;
        run[RUN_IO_SIZE] = step.size;
        rv.setUint16(RUN_IO_PORT, step.port, true);
        rv.setUint32(RUN_IO_COUNT, count, true);
        rv.setBigUint64(RUN_IO_DATA_OFFSET, BigInt(FAKE_PIO_DATA_OFFSET), true);
        run.fill(0, FAKE_PIO_DATA_OFFSET, FAKE_PIO_DATA_OFFSET + 4 * count);
        if (out) {
          for (const [i, v] of step.data.entries())
            writeLe(rv, FAKE_PIO_DATA_OFFSET + i * step.size, step.size, v);
        } else {
          this.pendingRead.set(id, step);
        }
        break;
      }
      case "mmio_write":
      case "mmio_read": {
        const write = step.exit === "mmio_write";
        reason(KVM_EXIT_MMIO);
        rv.setBigUint64(RUN_MMIO_PHYS_ADDR, BigInt(step.addr), true);
        rv.setUint32(RUN_MMIO_LEN, write ? step.data.length : step.len, true);
        run[RUN_MMIO_IS_WRITE] = write ? 1 : 0;
        if (write) run.set(step.data, RUN_MMIO_DATA);
        else this.pendingRead.set(id, step);
        break;
      }
      case "hlt":
        reason(KVM_EXIT_HLT);
        break;
      case "shutdown":
        reason(KVM_EXIT_SHUTDOWN);
        break;
      case "internal_error": {
        reason(KVM_EXIT_INTERNAL_ERROR);
        const data = step.data ?? [];
        rv.setUint32(RUN_INTERNAL_SUBERROR, step.suberror, true);
        rv.setUint32(RUN_INTERNAL_NDATA, data.length, true);
        for (const [i, d] of data.entries()) rv.setBigUint64(RUN_INTERNAL_DATA + i * 8, BigInt(d), true);
        break;
      }
      case "fail_entry":
        reason(KVM_EXIT_FAIL_ENTRY);
        rv.setBigUint64(RUN_FAIL_ENTRY_REASON, BigInt(step.reason), true);
        rv.setUint32(RUN_FAIL_ENTRY_CPU, step.cpu, true);
        break;
      case "system_event":
        reason(KVM_EXIT_SYSTEM_EVENT);
        rv.setUint32(RUN_SYSTEM_EVENT_TYPE, step.type, true);
        break;
      case "reason":
        reason(step.reason);
        break;
    }
    return 0;
  }

  /**
   * On the KVM_RUN after a port IN or MMIO read: what the VMM left in the run area (the guest
   * would now see it in its register or memory). Checked against the script's `expect`.
   */
  private readBack(id: number, run: Uint8Array, rv: DataView): number[] | undefined {
    const step = this.pendingRead.get(id);
    if (step === undefined) return undefined;
    this.pendingRead.delete(id);
    let values: number[];
    let expect: number[] | undefined;
    let where: string;
    if (step.exit === "io_in") {
      const count = step.count ?? 1;
      values = Array.from({ length: count }, (_, i) =>
        readLe(rv, FAKE_PIO_DATA_OFFSET + i * step.size, step.size),
      );
      expect = step.expect;
      where = `port ${hex(step.port)}`;
    } else if (step.exit === "mmio_read") {
      values = [...run.subarray(RUN_MMIO_DATA, RUN_MMIO_DATA + step.len)];
      expect = step.expect;
      where = `MMIO ${hex(step.addr)}`;
    } else {
      return undefined;
    }
    if (expect !== undefined && JSON.stringify(expect) !== JSON.stringify(values)) {
      throw new Error(
        `fake KVM: vCPU ${id} read [${values.map(hex)}] from ${where}, its script expected [${expect.map(hex)}]`,
      );
    }
    return values;
  }
}

/** A vCPU worker thread rebuilds the fake from FakeKvm.transfer (kvm_device.ts kvmDeviceFor). */
export function kvmDeviceFromTransfer(data: unknown): KvmDevice {
  return new FakeKvm(data as SharedState);
}

/** A record: its length (Int32), then its JSON, padded to 4 bytes so the next length is aligned. */
function recordBytes(jsonLength: number): number {
  return 4 + ((jsonLength + 3) & ~3);
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function writeLe(dv: DataView, off: number, size: number, v: number): void {
  if (size === 1) dv.setUint8(off, v);
  else if (size === 2) dv.setUint16(off, v, true);
  else dv.setUint32(off, v >>> 0, true);
}

function readLe(dv: DataView, off: number, size: number): number {
  return size === 1 ? dv.getUint8(off) : size === 2 ? dv.getUint16(off, true) : dv.getUint32(off, true);
}

function bigintBytes(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  view(b).setBigUint64(0, v, true);
  return b;
}

/** The part of a SET_* argument a test asserts on. */
function describeSet(request: number, b: Uint8Array): unknown {
  switch (request) {
    case KVM_SET_REGS: {
      const r = decodeRegs(b);
      return { rip: hex(r.rip), rsp: hex(r.rsp), rsi: hex(r.rsi), rflags: hex(r.rflags) };
    }
    case KVM_SET_SREGS: {
      const s = decodeSregs(b);
      return { cs: hex(s.cs.selector), cr0: hex(s.cr0), cr3: hex(s.cr3), cr4: hex(s.cr4), efer: hex(s.efer) };
    }
    case KVM_SET_MP_STATE:
      return { state: view(b).getUint32(0, true) };
    case KVM_SET_LAPIC:
      return { lvt0: hex(view(b).getUint32(APIC_LVT0, true)), lvt1: hex(view(b).getUint32(APIC_LVT1, true)) };
    default:
      return undefined;
  }
}
