import { VesselError } from "../errors.js";

/**
 * Errors building the default guest: apt missing, mirror unreachable, package not found, an
 * unpacked package without the expected files. Codes start with `GUEST_`.
 */
export class GuestError extends VesselError {}
