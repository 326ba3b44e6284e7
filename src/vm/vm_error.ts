import { VesselError } from "../errors.js";

/** Errors assembling or running a VM (bad config, the machine thread failed). */
export class VmError extends VesselError {}
