import type { AccessSize } from "../../bus/device.js";
import {
  EXIT_REASON_NAMES,
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_SYSTEM_EVENT_CRASH,
  KVM_SYSTEM_EVENT_RESET,
  KVM_SYSTEM_EVENT_SHUTDOWN,
  RUN_EX_ERROR_CODE,
  RUN_EX_EXCEPTION,
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
} from "../../sys/kvm_abi.js";
import { SysError } from "../../sys/sys_error.js";
import type { KvmVcpu } from "./vcpu.js";

/**
 * Where a vCPU's port and MMIO exits go: the machine's buses directly (in the thread that owns the
 * devices), or a mailbox to that thread (secondary vCPUs, mailbox.ts).
 */
export interface IoHandler {
  pioIn(port: number, size: AccessSize): number;
  pioOut(port: number, size: AccessSize, value: number): void;
  mmioRead(addr: number, size: AccessSize): number;
  mmioWrite(addr: number, size: AccessSize, value: number): void;
}

/**
 * Why a vCPU stopped running: a VM event, not an exception (CONVENTIONS.md: a misbehaving guest is
 * not an error in the VMM). `stopped` is a stop asked for by the VMM (debug-exit port, the user,
 * another vCPU); `shutdown` is KVM_EXIT_SHUTDOWN, which on x86 means a triple fault.
 */
export type VmEvent =
  | { kind: "stopped" }
  | { kind: "hlt" }
  | { kind: "shutdown"; dump: string }
  | { kind: "system_event"; type: "shutdown" | "reset" | "crash" | "other"; code: number }
  | { kind: "internal_error"; suberror: number; data: bigint[]; dump: string }
  | { kind: "fail_entry"; reason: bigint; cpu: number; dump: string }
  | { kind: "exception"; vector: number; errorCode: number; dump: string }
  | { kind: "unhandled_exit"; reason: number; name: string; dump: string };

/**
 * Shared control words of one vCPU (Int32Array over a SharedArrayBuffer so every thread sees them):
 * [STOP] nonzero asks the loop to return `stopped` at its next exit (set it, then kick the thread);
 * [PAUSE] nonzero makes the loop wait before its next KVM_RUN until it is cleared (and notified)
 * or a stop is asked (vcpu_link.ts pause/resume). Index 1 is the link's state word.
 */
export const CONTROL_STOP = 0;
export const CONTROL_PAUSE = 2;
export const CONTROL_WORDS = 4;

/** Exit counters of one vCPU: index = KVM exit reason (0..63); EINTR returns count as KVM_EXIT_INTR. */
export const EXIT_COUNTER_SLOTS = 64;

export function newExitCounters(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(EXIT_COUNTER_SLOTS * 4));
}

/** Exit counts by name ("io", "mmio", "hlt", ...), summed over any number of vCPUs. */
export function exitCountsByName(counters: readonly Int32Array[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (let reason = 0; reason < EXIT_COUNTER_SLOTS; reason++) {
    let n = 0;
    for (const c of counters) n += Atomics.load(c, reason);
    if (n > 0) out[EXIT_REASON_NAMES[reason] ?? `reason_${reason}`] = n;
  }
  return out;
}

export interface RunOptions {
  /** Called when KVM_RUN returned EINTR (the thread was kicked) and after every exit: serve mailboxes, poll input. */
  poll?: () => void;
  /** HLT exits (only without an in-kernel LAPIC) end the loop with `hlt` unless this returns true (keep running). */
  onHlt?: () => boolean;
  /** Called when the loop is about to wait for a pause to end, and when it ends. */
  onPause?: (paused: boolean) => void;
}

const EINTR = 4;
const EAGAIN = 11;

/**
 * THE run loop of the KVM engine (kvmtool's kvm_cpu__start): KVM_RUN, then one switch over the exit
 * reason that turns each exit into a bus access or a VM event. Every exit is counted by reason;
 * these are the lecture's VM exits.
 */
export function runVcpu(
  vcpu: KvmVcpu,
  io: IoHandler,
  counters: Int32Array,
  control: Int32Array,
  opts: RunOptions = {},
): VmEvent {
  const run = vcpu.run;
  const rv = vcpu.runView;
  const fd = vcpu.fd;
  const kvm = vcpu.device;
  const poll = opts.poll;
  for (;;) {
    if (Atomics.load(control, CONTROL_STOP) !== 0) return { kind: "stopped" };
    if (Atomics.load(control, CONTROL_PAUSE) !== 0) {
      opts.onPause?.(true);
      while (Atomics.load(control, CONTROL_PAUSE) !== 0 && Atomics.load(control, CONTROL_STOP) === 0) {
        Atomics.wait(control, CONTROL_PAUSE, 1, 100);
      }
      opts.onPause?.(false);
      continue;
    }
    const ret = kvm.run(fd);
    if (ret < 0) {
      const errno = -ret;
      if (errno === EINTR || errno === EAGAIN) {
        run[RUN_IMMEDIATE_EXIT] = 0;
        counters[KVM_EXIT_INTR]!++;
        if (poll !== undefined) poll();
        continue;
      }
      throw new SysError("ioctl(KVM_RUN)", errno);
    }
    const reason = rv.getUint32(RUN_EXIT_REASON, true);
    counters[reason < EXIT_COUNTER_SLOTS ? reason : 0]!++;
    switch (reason) {
      case KVM_EXIT_IO: {
        const size = run[RUN_IO_SIZE] as AccessSize;
        const port = rv.getUint16(RUN_IO_PORT, true);
        const count = rv.getUint32(RUN_IO_COUNT, true);
        let off = Number(rv.getBigUint64(RUN_IO_DATA_OFFSET, true));
        const out = run[RUN_IO_DIRECTION] === KVM_EXIT_IO_OUT;
        // String I/O (INS/OUTS with REP) arrives as `count` items of `size` bytes in one exit.
        for (let i = 0; i < count; i++, off += size) {
          if (out) {
            const v = size === 1 ? run[off]! : size === 2 ? rv.getUint16(off, true) : rv.getUint32(off, true);
            io.pioOut(port, size, v);
          } else {
            const v = io.pioIn(port, size);
            if (size === 1) run[off] = v;
            else if (size === 2) rv.setUint16(off, v, true);
            else rv.setUint32(off, v, true);
          }
        }
        break;
      }
      case KVM_EXIT_MMIO: {
        const addr = Number(rv.getBigUint64(RUN_MMIO_PHYS_ADDR, true));
        const len = rv.getUint32(RUN_MMIO_LEN, true);
        const write = run[RUN_MMIO_IS_WRITE] !== 0;
        // 8-byte accesses are split in two 4-byte ones (devices take 1, 2 or 4); 3/5/6/7 byte-wise.
        const step: AccessSize = len === 1 || len === 2 || len === 4 ? len : len === 8 ? 4 : 1;
        for (let o = 0; o < len; o += step) {
          const p = RUN_MMIO_DATA + o;
          if (write) {
            const v = step === 1 ? run[p]! : step === 2 ? rv.getUint16(p, true) : rv.getUint32(p, true);
            io.mmioWrite(addr + o, step, v);
          } else {
            const v = io.mmioRead(addr + o, step);
            if (step === 1) run[p] = v;
            else if (step === 2) rv.setUint16(p, v, true);
            else rv.setUint32(p, v, true);
          }
        }
        break;
      }
      case KVM_EXIT_HLT:
        if (opts.onHlt?.() === true) break;
        return { kind: "hlt" };
      case KVM_EXIT_SHUTDOWN:
        return { kind: "shutdown", dump: vcpu.dump() };
      case KVM_EXIT_SYSTEM_EVENT: {
        const type = rv.getUint32(RUN_SYSTEM_EVENT_TYPE, true);
        const name =
          type === KVM_SYSTEM_EVENT_SHUTDOWN
            ? "shutdown"
            : type === KVM_SYSTEM_EVENT_RESET
              ? "reset"
              : type === KVM_SYSTEM_EVENT_CRASH
                ? "crash"
                : "other";
        return { kind: "system_event", type: name, code: type };
      }
      case KVM_EXIT_INTERNAL_ERROR: {
        const n = Math.min(rv.getUint32(RUN_INTERNAL_NDATA, true), 16);
        const data: bigint[] = [];
        for (let i = 0; i < n; i++) data.push(rv.getBigUint64(RUN_INTERNAL_DATA + i * 8, true));
        return {
          kind: "internal_error",
          suberror: rv.getUint32(RUN_INTERNAL_SUBERROR, true),
          data,
          dump: vcpu.dump(),
        };
      }
      case KVM_EXIT_FAIL_ENTRY:
        return {
          kind: "fail_entry",
          reason: rv.getBigUint64(RUN_FAIL_ENTRY_REASON, true),
          cpu: rv.getUint32(RUN_FAIL_ENTRY_CPU, true),
          dump: vcpu.dump(),
        };
      case KVM_EXIT_EXCEPTION:
        return {
          kind: "exception",
          vector: rv.getUint32(RUN_EX_EXCEPTION, true),
          errorCode: rv.getUint32(RUN_EX_ERROR_CODE, true),
          dump: vcpu.dump(),
        };
      case KVM_EXIT_INTR:
      case KVM_EXIT_IRQ_WINDOW_OPEN:
        break;
      default: // KVM_EXIT_DEBUG, KVM_EXIT_UNKNOWN, ... : nothing a running guest should cause
        return {
          kind: "unhandled_exit",
          reason,
          name: EXIT_REASON_NAMES[reason] ?? `reason ${reason}`,
          dump: vcpu.dump(),
        };
    }
    if (poll !== undefined) poll();
  }
}

/** A one-line description of a VM event, with the register dump when there is one. */
export function describeVmEvent(e: VmEvent): string {
  switch (e.kind) {
    case "stopped":
      return "stopped by the VMM";
    case "hlt":
      return "the guest halted (HLT with interrupts off)";
    case "shutdown":
      return `the guest shut down (triple fault)\n${e.dump}`;
    case "system_event":
      return `the guest requested ${e.type} (KVM system event ${e.code})`;
    case "internal_error":
      return `KVM internal error, suberror ${e.suberror} [${e.data.map((d) => `0x${d.toString(16)}`).join(", ")}]\n${e.dump}`;
    case "fail_entry":
      return `VM entry failed on cpu ${e.cpu}: hardware reason 0x${e.reason.toString(16)}\n${e.dump}`;
    case "exception":
      return `guest exception ${e.vector} (error code 0x${e.errorCode.toString(16)})\n${e.dump}`;
    case "unhandled_exit":
      return `unhandled VM exit ${e.name} (${e.reason})\n${e.dump}`;
  }
}
