import { VesselError } from "../../errors.js";

/**
 * Errors of the image store, archives and builds. Codes are stable:
 * `IMAGE_NOT_FOUND`, `IMAGE_AMBIGUOUS`, `IMAGE_IN_USE`, `BAD_REFERENCE`, `BAD_ARCHIVE`, `BAD_BLOB`,
 * `BUILD_FILE`, `BUILD_STEP_FAILED`, `BASE_IMAGE`.
 */
export class ImageError extends VesselError {}
