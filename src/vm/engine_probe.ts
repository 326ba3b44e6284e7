import { existsSync } from "node:fs";
import { KvmSystem } from "../engines/kvm/system.js";
import type { EngineName } from "./config.js";

export interface EngineChoice {
  engine: EngineName;
  /** Why, in a sentence for the user ("using the soft engine: ..."). */
  reason: string;
}

/**
 * Picks an engine when the user did not (DESIGN.md, "Guests and engines"): hardware KVM that can
 * boot a stock kernel gets the KVM engine; no /dev/kvm, no permission, or PVM (a nested software
 * hypervisor that cannot boot stock kernels: the `kvm_pvm` module) gets the soft engine.
 */
export function probeEngine(kvmPath = "/dev/kvm", sysModuleDir = "/sys/module"): EngineChoice {
  if (!existsSync(kvmPath)) {
    return { engine: "soft", reason: `using the soft engine: this host has no ${kvmPath}` };
  }
  if (existsSync(`${sysModuleDir}/kvm_pvm`)) {
    return {
      engine: "soft",
      reason: `using the soft engine: ${kvmPath} is PVM, a nested software hypervisor that cannot boot stock kernels`,
    };
  }
  try {
    KvmSystem.open(kvmPath).close();
  } catch (err) {
    return {
      engine: "soft",
      reason: `using the soft engine: ${err instanceof Error ? err.message : String(err)}`,
    };
  }
  return { engine: "kvm", reason: `using the KVM engine (${kvmPath})` };
}
