/**
 * Typed bindings to the host C library through koffi. This folder is the only place in Vessel that
 * imports koffi (DESIGN.md, "Layers"); every function here checks the return value and throws a
 * SysError carrying the call and errno, read with koffi.errno() right after the call.
 */
import koffi from "koffi";
import { SysError } from "./sys_error.js";

const libc = koffi.load("libc.so.6");

const c = {
  open: libc.func("int open(const char *path, int flags, int mode)"),
  close: libc.func("int close(int fd)"),
  read: libc.func("long read(int fd, void *buf, size_t count)"),
  write: libc.func("long write(int fd, const void *buf, size_t count)"),
  ioctlPtr: libc.func("int ioctl(int fd, unsigned long request, void *arg)"),
  ioctlInt: libc.func("int ioctl(int fd, unsigned long request, unsigned long arg)"),
  mmap: libc.func("uintptr_t mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)"),
  munmap: libc.func("int munmap(uintptr_t addr, size_t length)"),
  eventfd: libc.func("int eventfd(unsigned int initval, int flags)"),
  poll: libc.func("int poll(void *fds, unsigned long nfds, int timeout)"),
  pthreadSelf: libc.func("unsigned long pthread_self()"),
  pthreadKill: libc.func("int pthread_kill(unsigned long thread, int sig)"),
};

/** open(2) flags and friends (x86-64 Linux values, asm-generic/fcntl.h). */
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
/** mmap(2) (asm-generic/mman-common.h). */
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
const MAP_FAILED = 2 ** 64 - 1; // (void *)-1 as an unsigned pointer-sized number
/** eventfd(2) flags. */
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
/** poll(2) events. */
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;

function check(ret: number, syscall: () => string, hint?: (errno: number) => string | undefined): number {
  if (ret < 0) {
    const errno = koffi.errno();
    throw new SysError(syscall(), errno, hint?.(errno));
  }
  return ret;
}

export function open(path: string, flags: number, mode = 0): number {
  return check(c.open(path, flags | O_CLOEXEC, mode) as number, () => `open(${path})`);
}

export function close(fd: number): void {
  check(c.close(fd) as number, () => `close(${fd})`);
}

export function read(fd: number, buf: Uint8Array): number {
  return check(c.read(fd, buf, buf.length) as number, () => `read(${fd})`);
}

export function write(fd: number, buf: Uint8Array): number {
  return check(c.write(fd, buf, buf.length) as number, () => `write(${fd})`);
}

/**
 * ioctl(2) with a pointer argument (a struct in a Uint8Array, read and/or written by the kernel).
 * `name` is the request's symbolic name, for the error message.
 */
export function ioctlPtr(fd: number, request: number, arg: Uint8Array | null, name: string): number {
  return check(c.ioctlPtr(fd, request, arg) as number, () => `ioctl(${name})`);
}

/** ioctl(2) with an integer argument (KVM_CREATE_VCPU's id, KVM_SET_TSS_ADDR's address, ...). */
export function ioctlInt(fd: number, request: number, arg: number, name: string): number {
  return check(c.ioctlInt(fd, request, arg) as number, () => `ioctl(${name})`);
}

/**
 * ioctl(2) returning the raw result without throwing: for the hot KVM_RUN path, where EINTR and
 * EAGAIN are normal and the caller reads errno itself.
 */
export function ioctlIntRaw(fd: number, request: number, arg: number): number {
  return c.ioctlInt(fd, request, arg) as number;
}

/** errno of the last failed call in this thread. */
export function lastErrno(): number {
  return koffi.errno();
}

/** mmap(2); returns the host address as a bigint. */
export function mmap(length: number, prot: number, flags: number, fd: number, offset = 0): bigint {
  const addr = c.mmap(null, length, prot, flags, fd, offset) as number | bigint;
  if (Number(addr) === MAP_FAILED || addr === -1 || addr === BigInt(-1)) {
    throw new SysError(`mmap(${length} bytes, fd ${fd})`, koffi.errno());
  }
  return BigInt(addr);
}

export function munmap(address: bigint, length: number): void {
  check(c.munmap(address, length) as number, () => `munmap(0x${address.toString(16)})`);
}

export function eventfd(initval = 0, flags = EFD_CLOEXEC): number {
  return check(c.eventfd(initval, flags) as number, () => "eventfd");
}

/**
 * poll(2) over `fds` for `events`; returns the revents of each, in order (0 = not ready). A
 * timeout of -1 waits forever. EINTR returns all zeros.
 */
export function poll(fds: readonly { fd: number; events: number }[], timeoutMs: number): number[] {
  const buf = new Uint8Array(8 * fds.length);
  const dv = new DataView(buf.buffer);
  fds.forEach((f, i) => {
    dv.setInt32(i * 8, f.fd, true);
    dv.setInt16(i * 8 + 4, f.events, true);
  });
  const ret = c.poll(buf, fds.length, timeoutMs) as number;
  if (ret < 0) {
    const errno = koffi.errno();
    if (errno === 4 /* EINTR */) return fds.map(() => 0);
    throw new SysError("poll", errno);
  }
  return fds.map((_, i) => dv.getUint16(i * 8 + 6, true));
}

/** The calling thread's pthread_t, so another thread can signal it out of a blocking call. */
export function threadSelf(): bigint {
  return BigInt(c.pthreadSelf() as number | bigint);
}

/** pthread_kill(3): interrupts a thread blocked in a system call (KVM_RUN returns EINTR). */
export function threadKill(thread: bigint, signal: number): void {
  const ret = c.pthreadKill(thread, signal) as number;
  if (ret !== 0) throw new SysError(`pthread_kill(${signal})`, ret);
}

/** Writes a 64-bit counter increment to an eventfd. */
export function eventfdSignal(fd: number, value = 1n): void {
  const buf = new Uint8Array(8);
  new DataView(buf.buffer).setBigUint64(0, value, true);
  write(fd, buf);
}

/** Reads (and resets) an eventfd's counter. */
export function eventfdRead(fd: number): bigint {
  const buf = new Uint8Array(8);
  read(fd, buf);
  return new DataView(buf.buffer).getBigUint64(0, true);
}

/**
 * The signal that kicks a vCPU thread out of KVM_RUN (KVM returns EINTR when a signal is pending;
 * api.rst 4.10 and `immediate_exit`). SIGUSR2 = 12 on x86-64 Linux.
 */
export const KICK_SIGNAL = 12;
let kickHandlerInstalled = false;

/**
 * Gives KICK_SIGNAL a no-op handler so that delivering it interrupts a blocking call instead of
 * killing the process. Node installs signal handlers only from the main thread, so the main thread
 * of every VMM process calls this before any vCPU runs.
 */
export function installKickHandler(): void {
  if (kickHandlerInstalled) return;
  process.on("SIGUSR2", () => {});
  kickHandlerInstalled = true;
}
