import { VesselError } from "../../errors.js";

/**
 * Errors of the container manager. Codes: `NO_SUCH_CONTAINER`, `AMBIGUOUS`, `NAME_IN_USE`,
 * `RUNNING` (rm of a running container without -f), `NOT_RUNNING`, `PORT_IN_USE`, `START_FAILED`,
 * `NETWORK`.
 */
export class ManagerError extends VesselError {}
