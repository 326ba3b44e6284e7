import { VesselError } from "../../errors.js";

/**
 * Errors of the KVM engine: the host cannot give us a usable KVM (no /dev/kvm, no permission,
 * wrong API version, a missing capability) or a VM could not be set up. A guest that crashes is
 * not an error here: it is a VM event (see run_loop.ts).
 */
export class KvmError extends VesselError {}
