import { VesselError } from "../errors.js";

/** Errors in wiring devices onto a bus (a programming or configuration error, never a guest's). */
export class BusError extends VesselError {}
