/**
 * Host memory for guest RAM: anonymous mappings that KVM_SET_USER_MEMORY_REGION registers and
 * that every thread views through the same address (GuestMemory's "host" regions).
 */
import koffi from "koffi";
import {
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "./libc.js";

/**
 * Maps `size` bytes of zeroed anonymous memory (MAP_NORESERVE: pages are committed as the guest
 * touches them). Returns the host address.
 */
export function mapAnonymous(size: number): bigint {
  return mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
}

/** Maps `size` bytes of a file descriptor shared (the vCPU's kvm_run area). */
export function mapShared(fd: number, size: number, offset = 0): bigint {
  return mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
}

export function unmap(address: bigint, size: number): void {
  munmap(address, size);
}

/**
 * An ArrayBuffer over host memory at `address` (no copy): writes through it reach the mapping.
 * Valid in any thread of the process for as long as the mapping lives.
 */
export function viewHostMemory(address: bigint, size: number): ArrayBuffer {
  return koffi.view(address, size);
}
