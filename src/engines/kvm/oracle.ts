/**
 * The KVM oracle for the software CPU's tests: runs a snippet of 32-bit x86 code in ring 3, in a
 * compatibility-mode code segment under a small 64-bit kernel (payloads/oracle_kernel.asm), and
 * returns the registers, flags, data and fault the CPU produced. On hardware KVM the snippet runs
 * in VMX/SVM non-root mode: the hardware is the oracle.
 *
 * On PVM hosts (/dev/kvm from the `kvm_pvm` module) it is not: a guest that is not PVM-enlightened
 * stays in PVM's "non-PVM" bootstrap mode, where ALL its code, ring 3 included, goes through KVM's
 * x86 instruction emulator (measured: a ring-3 `dec ecx; jnz` loop runs at ~0.5-1 MIPS, and
 * POPCNT, x87 arithmetic, DAA raise #UD). Writing the PVM MSRs (0x4b564d20.., 0x4b564df0..) #GPs
 * and the PVM CPUID leaves (0x40000200) read 0 even with CR0/CR4/EFER/STAR set the PVM way, so
 * Vessel's kernel cannot switch to PVM mode. The emulator computes ALU results by executing the
 * same instruction on the host ("fastop"), so arithmetic and flags are still the hardware's;
 * instructions it lacks fault with #UD (callers probe and skip those).
 *
 * Contract (helper-independent):
 *   runCompat32OnKvm(code, init, dataPage?) -> Promise<Compat32Result>
 *   - `code` (1..65535 bytes) is placed at 0x00400000 and entered at its first byte with
 *     CS = 0x1b (32-bit, DPL 3), DS = ES = FS = GS = SS = 0x23 (flat, base 0, limit 4 GiB, DPL 3).
 *     A HLT is appended after it: falling off the end (or jumping to code.length) ends the run
 *     normally. CPL 3 with IOPL 0: IN/OUT/CLI/STI/HLT and other privileged instructions fault.
 *   - The snippet's memory map (linear = physical):
 *       0x00400000 .. +code.length   code (readable and writable by the snippet)
 *       0x00500000 .. +data.length   the data window: `dataPage` (default 4096 zero bytes, at most
 *                                    64 KiB), returned after the run as `data`
 *       the rest of 0x00400000-0x005fffff is zeroed, user-accessible scratch; everything else is
 *       supervisor-only and faults (#PF) when the snippet touches it.
 *     Point ESP into the data window (e.g. 0x00500000 + data.length) if the snippet uses the stack.
 *   - `init.regs` are the eight 32-bit GPRs at entry; of `init.eflags` only CF, PF, AF, ZF, SF,
 *     DF and OF are taken (IF = 0, IOPL = 0, TF = 0).
 *   - The result's `regs` and `eflags` are the values when the snippet ended or faulted (EFLAGS as
 *     pushed by the CPU: also bit 1, and IF as the host presents it; compare arithmetic flags
 *     under a mask). `fault` is set when the snippet raised an exception: vector, error code (0
 *     for vectors without one), the faulting EIP, and CR2 for a page fault. `regs.esp` and EIP are
 *     those of the faulting instruction for faults.
 *   - `timeoutMs` (default 5000) bounds a snippet that never ends: the result then has
 *     `fault.vector = -1` ("timed out").
 *   - Findings on PVM: ring-3 INT 0x80 arrives as #UD (6), not as vector 0x80; other exceptions
 *     arrive with their architectural vector and error code; instructions KVM's emulator lacks
 *     arrive as #UD (see above).
 *   Throws KvmError when the host has no usable KVM (see `kvmOracleSkipReason()`).
 */
import { existsSync } from "node:fs";
import type { AccessSize } from "../../bus/device.js";
import { VesselError } from "../../errors.js";
import { GuestMemory } from "../../memory/guest_memory.js";
import { KVM_IDENTITY_MAP_START, KVM_TSS_START } from "../../memory/layout.js";
import { installKickHandler } from "../../sys/libc.js";
import { mapAnonymous, unmap, viewHostMemory } from "../../sys/mman.js";
import { KvmError } from "./kvm_error.js";
import { ORACLE_KERNEL_BASE64 } from "./payloads/oracle_kernel.js";
import { flat32Entry } from "./payload_entry.js";
import { CONTROL_STOP, describeVmEvent, type IoHandler, newExitCounters, runVcpu } from "./run_loop.js";
import { DEFAULT_KVM_PATH, KvmSystem } from "./system.js";
import { configureVcpu, KvmVcpu } from "./vcpu.js";
import { VcpuLink } from "./vcpu_link.js";
import type { KvmVm } from "./vm.js";
import { Watchdog } from "./watchdog.js";

export type Compat32RegName = "eax" | "ebx" | "ecx" | "edx" | "esi" | "edi" | "ebp" | "esp";
export type Compat32Regs = Record<Compat32RegName, number>;

export interface Compat32Init {
  regs: Compat32Regs;
  eflags: number;
}

export interface Compat32Fault {
  /** Exception vector (0-31), or -1 if the snippet timed out. */
  vector: number;
  errorCode: number;
  eip: number;
  /** CR2 (the faulting linear address) for a page fault (vector 14). */
  cr2?: number;
}

export interface Compat32Result {
  regs: Compat32Regs;
  eflags: number;
  data: Uint8Array;
  fault?: Compat32Fault;
}

/** The snippet's fixed addresses (documented above; test-visible). */
export const ORACLE_CODE_ADDR = 0x0040_0000;
export const ORACLE_DATA_ADDR = 0x0050_0000;
export const ORACLE_MAX_CODE = 0xffff;
export const ORACLE_MAX_DATA = 0x10000;
const KERNEL_ADDR = 0x1000;
const CTX = 0x16000;
const RES = 0x16100;
const MEMORY_SIZE = 8 << 20;
const STOP_PORT = 0xf5;
const REG_ORDER: readonly Compat32RegName[] = ["eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp"];
const HLT = 0xf4;

/** Why the oracle cannot run here, or undefined if it can. */
export function kvmOracleSkipReason(kvmPath = DEFAULT_KVM_PATH): string | undefined {
  if (!existsSync(kvmPath)) return `no ${kvmPath} on this host`;
  try {
    KvmSystem.open(kvmPath).close();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  return undefined;
}

/**
 * One oracle VM, reused for any number of snippets (a run costs a few VM exits). Not thread-safe;
 * runs block the calling thread for the duration of the snippet.
 */
export class KvmOracle {
  private readonly system: KvmSystem;
  private readonly vm: KvmVm;
  private readonly memory: GuestMemory;
  private readonly address: bigint;
  private readonly vcpu: KvmVcpu;
  private readonly link: VcpuLink;
  private readonly counters = newExitCounters();
  private readonly watchdog: Watchdog;
  /** True when the kernel is parked at its "job done" port write, ready for the next job. */
  private parked = false;
  private readonly io: IoHandler;

  private constructor(
    system: KvmSystem,
    vm: KvmVm,
    address: bigint,
    vcpu: KvmVcpu,
    link: VcpuLink,
    watchdog: Watchdog,
  ) {
    this.link = link;
    this.system = system;
    this.vm = vm;
    this.address = address;
    this.vcpu = vcpu;
    this.watchdog = watchdog;
    this.memory = new GuestMemory(
      [{ base: 0, size: MEMORY_SIZE, backing: { kind: "host", address } }],
      viewHostMemory,
    );
    this.memory.write(KERNEL_ADDR, Buffer.from(ORACLE_KERNEL_BASE64, "base64"));
    const control = this.link.control;
    const unexpected = (what: string) => {
      throw new KvmError("KVM_ORACLE", `oracle kernel made an unexpected ${what}`);
    };
    this.io = {
      pioIn: (port: number) => unexpected(`port read 0x${port.toString(16)}`),
      pioOut: (port: number, _size: AccessSize) => {
        if (port !== STOP_PORT) unexpected(`port write 0x${port.toString(16)}`);
        Atomics.store(control, CONTROL_STOP, 1);
      },
      mmioRead: (addr: number) => unexpected(`MMIO read 0x${addr.toString(16)}`),
      mmioWrite: (addr: number) => unexpected(`MMIO write 0x${addr.toString(16)}`),
    };
  }

  static async open(kvmPath = DEFAULT_KVM_PATH): Promise<KvmOracle> {
    installKickHandler();
    const system = KvmSystem.open(kvmPath);
    const vm = system.createVm();
    try {
      vm.setTssAndIdentityMap(KVM_TSS_START, KVM_IDENTITY_MAP_START);
      const address = mapAnonymous(MEMORY_SIZE);
      vm.addMemory(0, MEMORY_SIZE, address);
      const vcpu = new KvmVcpu(vm.createVcpu(0), 0, system.vcpuMmapSize);
      configureVcpu(vcpu, { supportedCpuid: system.supportedCpuid(), cpuCount: 1, irqchip: false });
      const link = new VcpuLink();
      link.attach(vcpu.runAddressForLink());
      return new KvmOracle(system, vm, address, vcpu, link, await Watchdog.start(link));
    } catch (err) {
      vm.close();
      system.close();
      throw err;
    }
  }

  /** Runs one snippet (see the contract at the top of this file). */
  run(code: Uint8Array, init: Compat32Init, dataPage?: Uint8Array, timeoutMs = 5000): Compat32Result {
    if (code.length < 1 || code.length > ORACLE_MAX_CODE) {
      throw new VesselError(
        "ORACLE_INPUT",
        `snippet must be 1..${ORACLE_MAX_CODE} bytes, got ${code.length}`,
      );
    }
    const data = dataPage ?? new Uint8Array(4096);
    if (data.length > ORACLE_MAX_DATA) {
      throw new VesselError(
        "ORACLE_INPUT",
        `data window is at most ${ORACLE_MAX_DATA} bytes, got ${data.length}`,
      );
    }
    const m = this.memory;
    m.fill(ORACLE_CODE_ADDR, 0x200000, 0);
    m.write(ORACLE_CODE_ADDR, code);
    m.writeU8(ORACLE_CODE_ADDR + code.length, HLT);
    m.write(ORACLE_DATA_ADDR, data);
    REG_ORDER.forEach((r, i) => {
      m.writeU32(CTX + i * 4, init.regs[r] >>> 0);
    });
    m.writeU32(CTX + 32, init.eflags >>> 0);
    m.fill(RES, 14 * 4, 0);
    if (!this.parked) {
      // (Re)start the kernel from its 32-bit entry: first run, or after a timeout.
      this.vcpu.loadEntryState(flat32Entry(KERNEL_ADDR));
    }
    Atomics.store(this.link.control, CONTROL_STOP, 0);
    this.watchdog.arm(timeoutMs);
    let event: ReturnType<typeof runVcpu>;
    try {
      event = runVcpu(this.vcpu, this.io, this.counters, this.link.control);
    } finally {
      const fired = this.watchdog.disarm();
      this.parked = !fired;
    }
    const timedOut = !this.parked;
    Atomics.store(this.link.control, CONTROL_STOP, 0);
    if (!timedOut && event.kind !== "stopped") {
      this.parked = false;
      throw new KvmError("KVM_ORACLE", `oracle kernel failed: ${describeVmEvent(event)}`);
    }
    const out = {} as Compat32Regs;
    const u32 = (i: number) => m.readU32(RES + i * 4);
    REG_ORDER.forEach((r, i) => {
      out[r] = u32(i);
    });
    const result: Compat32Result = { regs: out, eflags: u32(8), data: m.read(ORACLE_DATA_ADDR, data.length) };
    if (timedOut) {
      const regs = this.vcpu.getRegs();
      return {
        regs: {
          eax: Number(regs.rax & 0xffffffffn),
          ebx: Number(regs.rbx & 0xffffffffn),
          ecx: Number(regs.rcx & 0xffffffffn),
          edx: Number(regs.rdx & 0xffffffffn),
          esi: Number(regs.rsi & 0xffffffffn),
          edi: Number(regs.rdi & 0xffffffffn),
          ebp: Number(regs.rbp & 0xffffffffn),
          esp: Number(regs.rsp & 0xffffffffn),
        },
        eflags: Number(regs.rflags & 0xffffffffn),
        data: result.data,
        fault: { vector: -1, errorCode: 0, eip: Number(regs.rip & 0xffffffffn) },
      };
    }
    const vector = u32(9);
    const eip = u32(11);
    const done = vector === 13 && eip === ORACLE_CODE_ADDR + code.length && u32(10) === 0;
    if (!done) {
      result.fault = { vector, errorCode: u32(10), eip };
      if (vector === 14) result.fault.cr2 = u32(13);
    }
    return result;
  }

  /** Exit counts of this oracle VM (io, intr, ...). */
  exits(): Int32Array {
    return this.counters;
  }

  async close(): Promise<void> {
    await this.watchdog.stop();
    this.vm.close();
    this.system.close();
    unmap(this.address, MEMORY_SIZE);
  }
}

let shared: Promise<KvmOracle> | undefined;

/**
 * Runs a 32-bit snippet in ring 3 on the host's KVM (a shared oracle VM, created on first use;
 * its threads do not keep the process alive). See the contract at the top of this file.
 */
export async function runCompat32OnKvm(
  code: Uint8Array,
  init: Compat32Init,
  dataPage?: Uint8Array,
  options: { timeoutMs?: number } = {},
): Promise<Compat32Result> {
  shared ??= KvmOracle.open();
  return (await shared).run(code, init, dataPage, options.timeoutMs);
}
