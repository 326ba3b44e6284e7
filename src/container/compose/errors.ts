import { VesselError } from "../../errors.js";

/**
 * Errors of `vessel compose`. Codes are stable: `COMPOSE_FILE` (the file is wrong: the message
 * names the key and line), `COMPOSE_NO_FILE`, `COMPOSE_PORT_CLASH`, `COMPOSE_UP_FAILED`.
 */
export class ComposeError extends VesselError {}
