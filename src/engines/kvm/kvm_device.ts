import { existsSync } from "node:fs";
import { KVM_RUN } from "../../sys/kvm_abi.js";
import { close, ioctlInt, ioctlIntRaw, ioctlPtr, lastErrno, O_RDWR, open } from "../../sys/libc.js";
import { mapShared, unmap } from "../../sys/mman.js";
import { KvmError } from "./kvm_error.js";

/**
 * The KVM ioctl interface as the engine uses it: file descriptors, ioctls and the mapping of each
 * vCPU's kvm_run area (api.rst sections 4 and 5). `hostKvm` goes to the host kernel through sys/;
 * tests give the engine a scripted fake of it (test/engines/kvm/fake_kvm.ts), so the run loop,
 * the vCPU threads, the mailbox and the watchdog run on hosts without /dev/kvm.
 */
export interface KvmDevice {
  /** Whether the device node exists (the engine says "no /dev/kvm" before trying to open it). */
  exists(path: string): boolean;
  /** open(2) read-write; throws SysError. */
  open(path: string): number;
  close(fd: number): void;
  /** ioctl with an integer argument; returns the result, throws SysError on failure. */
  ioctlInt(fd: number, request: number, arg: number, name: string): number;
  /** ioctl with a structure the kernel reads and/or writes; returns the result, throws SysError. */
  ioctlPtr(fd: number, request: number, arg: Uint8Array | null, name: string): number;
  /**
   * KVM_RUN on a vCPU fd, the hot path: returns 0 after an exit (its reason is in kvm_run), or
   * -errno without throwing (EINTR and EAGAIN are normal: the thread was kicked).
   */
  run(fd: number): number;
  /**
   * mmap(2) of a vCPU fd's kvm_run area, shared, at offset 0: a host address that every thread of
   * the process can view (vcpu_link.ts writes immediate_exit there to kick the vCPU).
   */
  mmapRun(fd: number, size: number): bigint;
  unmapRun(address: bigint, size: number): void;
  /**
   * How a vCPU worker thread gets the same device: undefined for the host's (every thread opens
   * it through sys/); otherwise a module and the structured-clonable data it rebuilds it from.
   */
  readonly transfer: KvmDeviceTransfer | undefined;
}

/**
 * A device handed to another thread: `module` (a file URL) exports
 * `kvmDeviceFromTransfer(data): KvmDevice`. Only fakes for tests have one; the engine takes a
 * device only from KvmEngineOptions.kvm, which no configuration file or CLI flag reaches.
 */
export interface KvmDeviceTransfer {
  module: string;
  data: unknown;
}

/** The host kernel's KVM, through sys/libc.ts and sys/mman.ts. */
export const hostKvm: KvmDevice = {
  exists: (path) => existsSync(path),
  open: (path) => open(path, O_RDWR),
  close: (fd) => close(fd),
  ioctlInt: (fd, request, arg, name) => ioctlInt(fd, request, arg, name),
  ioctlPtr: (fd, request, arg, name) => ioctlPtr(fd, request, arg, name),
  run: (fd) => {
    const ret = ioctlIntRaw(fd, KVM_RUN, 0);
    return ret < 0 ? -lastErrno() : ret;
  },
  mmapRun: (fd, size) => mapShared(fd, size),
  unmapRun: (address, size) => unmap(address, size),
  transfer: undefined,
};

/** The device a worker thread uses for `transfer` (vcpu_worker.ts). */
export async function kvmDeviceFor(transfer: KvmDeviceTransfer | undefined): Promise<KvmDevice> {
  if (transfer === undefined) return hostKvm;
  const m = (await import(transfer.module)) as { kvmDeviceFromTransfer?: (data: unknown) => KvmDevice };
  if (typeof m.kvmDeviceFromTransfer !== "function") {
    throw new KvmError(
      "KVM_DEVICE",
      `${transfer.module} does not export kvmDeviceFromTransfer(data): it is not a KVM device module`,
      { module: transfer.module },
    );
  }
  return m.kvmDeviceFromTransfer(transfer.data);
}
