import { existsSync } from "node:fs";
import { KvmSystem } from "../engines/kvm/system.js";
import type { EngineName } from "./config.js";

export interface EngineChoice {
  engine: EngineName;
  /** Why, in a sentence for the user ("using the soft engine: ..."). */
  reason: string;
}

/**
 * What the probe needs to know of a host, read by `readHostFacts` (or described by a test, so
 * each host kind is covered whatever this machine is).
 */
export interface HostFacts {
  kvmPath: string;
  /** The device node exists. */
  kvmExists: boolean;
  /** The `kvm_pvm` module is loaded: /dev/kvm (if any) is PVM, not hardware virtualization. */
  pvm: boolean;
  /** Opening the device and checking its API version: undefined when it worked, else why not. */
  openError: string | undefined;
}

/** Reads the facts of this host: the device node, the PVM module, and whether KVM opens. */
export function readHostFacts(kvmPath = "/dev/kvm", sysModuleDir = "/sys/module"): HostFacts {
  const kvmExists = existsSync(kvmPath);
  const pvm = existsSync(`${sysModuleDir}/kvm_pvm`);
  let openError: string | undefined;
  // Opened only where it can matter: an absent node or PVM already decides.
  if (kvmExists && !pvm) {
    try {
      KvmSystem.open(kvmPath).close();
    } catch (err) {
      openError = err instanceof Error ? err.message : String(err);
    }
  }
  return { kvmPath, kvmExists, pvm, openError };
}

/**
 * Picks an engine when the user did not (DESIGN.md, "Guests and engines"): hardware KVM that can
 * boot a stock kernel gets the KVM engine; no /dev/kvm, no permission, or PVM (a nested software
 * hypervisor that cannot boot stock kernels: the `kvm_pvm` module) gets the soft engine. The
 * absent device is checked first: a host may have the PVM module loaded and no device node.
 */
export function chooseEngine(host: HostFacts): EngineChoice {
  if (!host.kvmExists) {
    return { engine: "soft", reason: `using the soft engine: this host has no ${host.kvmPath}` };
  }
  if (host.pvm) {
    return {
      engine: "soft",
      reason: `using the soft engine: ${host.kvmPath} is PVM, a nested software hypervisor that cannot boot stock kernels`,
    };
  }
  if (host.openError !== undefined) {
    return { engine: "soft", reason: `using the soft engine: ${host.openError}` };
  }
  return { engine: "kvm", reason: `using the KVM engine (${host.kvmPath})` };
}

/** Probes this host and picks its engine. */
export function probeEngine(kvmPath = "/dev/kvm", sysModuleDir = "/sys/module"): EngineChoice {
  return chooseEngine(readHostFacts(kvmPath, sysModuleDir));
}
