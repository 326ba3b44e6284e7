import { existsSync, readFileSync } from "node:fs";
import {
  type CpuidEntry,
  decodeCpuid2,
  encodeCpuid2,
  KVM_API_VERSION,
  KVM_CAP_IRQCHIP,
  KVM_CAP_MAX_VCPUS,
  KVM_CAP_NR_VCPUS,
  KVM_CAP_USER_MEMORY,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_MAX_CPUID_ENTRIES,
} from "../../sys/kvm_abi.js";
import { SysError } from "../../sys/sys_error.js";
import { hostKvm, type KvmDevice } from "./kvm_device.js";
import { KvmError } from "./kvm_error.js";
import { KvmVm } from "./vm.js";

export const DEFAULT_KVM_PATH = "/dev/kvm";

/**
 * The host's KVM (the /dev/kvm "system" fd, api.rst section 4: system ioctls). Opening it checks
 * everything a VMM needs before it creates anything, and says what to do when it cannot work.
 */
export class KvmSystem {
  readonly fd: number;
  readonly path: string;
  /** The ioctl interface every fd of this KVM goes through (the host's, or a test's fake). */
  readonly device: KvmDevice;
  readonly apiVersion: number;
  /** Size of each vCPU's kvm_run mapping (KVM_GET_VCPU_MMAP_SIZE). */
  readonly vcpuMmapSize: number;

  private constructor(device: KvmDevice, fd: number, path: string, apiVersion: number, vcpuMmapSize: number) {
    this.device = device;
    this.fd = fd;
    this.path = path;
    this.apiVersion = apiVersion;
    this.vcpuMmapSize = vcpuMmapSize;
  }

  /**
   * Opens `path` (default /dev/kvm; tests inject other paths) and checks the API. `device` is the
   * host's KVM; tests pass a fake (test/engines/kvm/fake_kvm.ts).
   */
  static open(path: string = DEFAULT_KVM_PATH, device: KvmDevice = hostKvm): KvmSystem {
    if (!device.exists(path)) {
      throw new KvmError(
        "KVM_MISSING",
        `no ${path}: this host has no KVM; run with --engine soft, or enable virtualization (VT-x/AMD-V in the firmware, the kvm_intel or kvm_amd module)`,
        { path },
      );
    }
    let fd: number;
    try {
      fd = device.open(path);
    } catch (err) {
      if (err instanceof SysError && (err.errnoName === "EACCES" || err.errnoName === "EPERM")) {
        throw new KvmError(
          "KVM_PERMISSION",
          `no permission to open ${path}: add your user to the "kvm" group (sudo usermod -aG kvm $USER, then log in again), or run with --engine soft`,
          { path },
          err,
        );
      }
      throw new KvmError(
        "KVM_OPEN",
        `cannot open ${path}: ${err instanceof Error ? err.message : String(err)}`,
        { path },
        err,
      );
    }
    try {
      let apiVersion: number;
      try {
        apiVersion = device.ioctlInt(fd, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION");
      } catch (err) {
        throw new KvmError(
          "KVM_NOT_KVM",
          `${path} is not a KVM device (${err instanceof Error ? err.message : String(err)}); point VESSEL_KVM_PATH at /dev/kvm, or run with --engine soft`,
          { path },
          err,
        );
      }
      if (apiVersion !== KVM_API_VERSION) {
        throw new KvmError(
          "KVM_API_VERSION",
          `${path} speaks KVM API version ${apiVersion}, Vessel needs ${KVM_API_VERSION}: this is not a Linux KVM device; run with --engine soft`,
          { path, apiVersion },
        );
      }
      for (const [cap, name] of [
        [KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"],
        [KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"],
      ] as const) {
        if (device.ioctlInt(fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION") <= 0) {
          throw new KvmError(
            "KVM_CAPABILITY",
            `${path} lacks ${name}, which Vessel needs; run with --engine soft`,
            {
              path,
              cap: name,
            },
          );
        }
      }
      const mmapSize = device.ioctlInt(fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
      return new KvmSystem(device, fd, path, apiVersion, mmapSize);
    } catch (err) {
      device.close(fd);
      throw err;
    }
  }

  checkExtension(cap: number): number {
    return this.device.ioctlInt(this.fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION");
  }

  /** The recommended and maximum number of vCPUs per VM (api.rst 4.4, KVM_CAP_NR_VCPUS/MAX_VCPUS). */
  maxVcpus(): number {
    return this.checkExtension(KVM_CAP_MAX_VCPUS) || this.checkExtension(KVM_CAP_NR_VCPUS) || 4;
  }

  /** KVM_GET_SUPPORTED_CPUID: what the host CPU and KVM can show a guest (api.rst 4.46). */
  supportedCpuid(): CpuidEntry[] {
    const buf = encodeCpuid2([], KVM_MAX_CPUID_ENTRIES);
    this.device.ioctlPtr(this.fd, KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID");
    return decodeCpuid2(buf);
  }

  createVm(): KvmVm {
    return new KvmVm(this, this.device.ioctlInt(this.fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM"));
  }

  close(): void {
    this.device.close(this.fd);
  }
}

/**
 * True when /dev/kvm is provided by PVM (the `kvm_pvm` module): a nested, software hypervisor.
 * A PVM-enlightened guest kernel runs its user mode natively; a stock one stays in PVM's bootstrap
 * mode, where every instruction goes through KVM's emulator (~1 MIPS; 32-bit paging refused;
 * INT3, FWAIT, RDRAND, CMPXCHG16B, x87 arithmetic, POPCNT missing). It cannot boot a stock Linux
 * kernel, so Vessel does not try.
 */
export function isPvm(sysModuleDir = "/sys/module"): boolean {
  return existsSync(`${sysModuleDir}/kvm_pvm`);
}

/** Vendor string from /proc/cpuinfo-free sources: the CPUID leaf 0 of KVM's supported list. */
export function cpuVendor(entries: readonly CpuidEntry[]): string {
  const leaf0 = entries.find((e) => e.function === 0);
  if (leaf0 === undefined) return "unknown";
  const b = Buffer.alloc(12);
  b.writeUInt32LE(leaf0.ebx, 0);
  b.writeUInt32LE(leaf0.edx, 4);
  b.writeUInt32LE(leaf0.ecx, 8);
  return b.toString("latin1");
}

/** Reads a sysfs file or returns undefined (used by the engine probe). */
export function readSys(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}
