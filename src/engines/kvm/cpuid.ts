import type { CpuidEntry } from "../../sys/kvm_abi.js";

/**
 * The CPUID a vCPU shows its guest, derived from KVM_GET_SUPPORTED_CPUID (api.rst 4.46: "userspace
 * can use the information returned by this ioctl to construct cpuid information for
 * KVM_SET_CPUID2"). Per vCPU: the APIC id and topology, and the hypervisor-present bit.
 *
 * Leaf 1 (Intel SDM vol. 2A, CPUID): EBX[31:24] initial APIC id, EBX[23:16] logical processors per
 * package (valid with EDX.HTT[28]); ECX[31] is reserved for hypervisors to say "you are virtual".
 * Leaf 0xB / 0x1F: EDX is the x2APIC id of the asking CPU. Leaf 4: EAX[31:26] cores per package - 1.
 */
export function vcpuCpuid(supported: readonly CpuidEntry[], apicId: number, cpuCount: number): CpuidEntry[] {
  return supported.map((e) => {
    const out = { ...e };
    switch (e.function) {
      case 1:
        out.ebx = ((e.ebx & 0x0000ffff) | ((cpuCount & 0xff) << 16) | ((apicId & 0xff) << 24)) >>> 0;
        out.ecx = (e.ecx | 0x8000_0000) >>> 0; // hypervisor present
        if (cpuCount > 1) out.edx = (e.edx | (1 << 28)) >>> 0; // HTT: EBX[23:16] is valid
        break;
      case 4:
        out.eax = ((e.eax & 0x03ff_ffff) | (((cpuCount - 1) & 0x3f) << 26)) >>> 0;
        break;
      case 0xb:
      case 0x1f:
        out.edx = apicId >>> 0;
        break;
      default:
        break;
    }
    return out;
  });
}
