import { VesselError } from "../errors.js";

/**
 * Errors loading a guest kernel: not a bzImage, too old a boot protocol, memory too small for
 * kernel and initrd, a command line longer than the kernel accepts. Codes start with `BOOT_`.
 */
export class BootError extends VesselError {}
