import {
  encodeIoeventfd,
  encodeIrqfd,
  encodeIrqLevel,
  encodeMemoryRegion,
  encodePitConfig,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_IOEVENTFD,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQ_LINE,
  KVM_IRQFD,
  KVM_PIT_SPEAKER_DUMMY,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
} from "../../sys/kvm_abi.js";
import type { KvmDevice } from "./kvm_device.js";
import type { KvmSystem } from "./system.js";

/**
 * One KVM virtual machine (api.rst section 4, "vm ioctl"s): its memory slots, the in-kernel
 * interrupt controllers and PIT, and the creation of vCPUs. Lives in the machine worker.
 */
export class KvmVm {
  readonly system: KvmSystem;
  readonly fd: number;
  private readonly device: KvmDevice;
  private nextSlot = 0;
  readonly vcpuFds: number[] = [];

  constructor(system: KvmSystem, fd: number) {
    this.system = system;
    this.fd = fd;
    this.device = system.device;
  }

  /** KVM_SET_USER_MEMORY_REGION: guest-physical [guestPhys, +size) is backed by host memory at hostAddr. */
  addMemory(guestPhys: number, size: number, hostAddr: bigint): number {
    const slot = this.nextSlot++;
    this.device.ioctlPtr(
      this.fd,
      KVM_SET_USER_MEMORY_REGION,
      encodeMemoryRegion(slot, 0, guestPhys, size, hostAddr),
      "KVM_SET_USER_MEMORY_REGION",
    );
    return slot;
  }

  /**
   * KVM_SET_TSS_ADDR (3 pages) and KVM_SET_IDENTITY_MAP_ADDR (1 page): Intel VMX needs them for
   * real-mode emulation; they must not overlap guest RAM or MMIO (layout.ts puts them below 4 GiB).
   */
  setTssAndIdentityMap(tssAddr: number, identityMapAddr: number): void {
    const ident = new Uint8Array(8);
    new DataView(ident.buffer).setBigUint64(0, BigInt(identityMapAddr), true);
    this.device.ioctlPtr(this.fd, KVM_SET_IDENTITY_MAP_ADDR, ident, "KVM_SET_IDENTITY_MAP_ADDR");
    this.device.ioctlInt(this.fd, KVM_SET_TSS_ADDR, tssAddr, "KVM_SET_TSS_ADDR");
  }

  /** KVM_CREATE_IRQCHIP: in-kernel 8259 pair, IOAPIC and a local APIC per vCPU (api.rst 4.24). */
  createIrqchip(): void {
    this.device.ioctlInt(this.fd, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
  }

  /** KVM_CREATE_PIT2: in-kernel 8254 on ports 0x40-0x43, wired to IRQ0 (api.rst 4.63). */
  createPit2(): void {
    this.device.ioctlPtr(this.fd, KVM_CREATE_PIT2, encodePitConfig(KVM_PIT_SPEAKER_DUMMY), "KVM_CREATE_PIT2");
  }

  /** KVM_IRQ_LINE: drives a GSI of the in-kernel irqchip (both PIC and IOAPIC inputs). */
  irqLine(gsi: number, high: boolean): void {
    this.device.ioctlPtr(this.fd, KVM_IRQ_LINE, encodeIrqLevel(gsi, high ? 1 : 0), "KVM_IRQ_LINE");
  }

  /** KVM_IRQFD: a write to the eventfd raises `gsi` without a round trip through user space. */
  irqfd(eventFd: number, gsi: number): void {
    this.device.ioctlPtr(this.fd, KVM_IRQFD, encodeIrqfd(eventFd, gsi), "KVM_IRQFD");
  }

  /** KVM_IOEVENTFD: a guest write to (port or MMIO) `addr` signals the eventfd instead of exiting. */
  ioeventfd(addr: number, len: number, eventFd: number, pio: boolean): void {
    this.device.ioctlPtr(
      this.fd,
      KVM_IOEVENTFD,
      encodeIoeventfd(addr, len, eventFd, pio ? KVM_IOEVENTFD_FLAG_PIO : 0),
      "KVM_IOEVENTFD",
    );
  }

  /** KVM_CREATE_VCPU; returns the vCPU fd, usable from any thread of the process (KvmVcpu). */
  createVcpu(id: number): number {
    const fd = this.device.ioctlInt(this.fd, KVM_CREATE_VCPU, id, "KVM_CREATE_VCPU");
    this.vcpuFds.push(fd);
    return fd;
  }

  close(): void {
    for (const fd of this.vcpuFds) this.device.close(fd);
    this.vcpuFds.length = 0;
    this.device.close(this.fd);
  }
}
