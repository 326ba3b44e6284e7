import { VesselError } from "../errors.js";

/**
 * Errors of the container runtime. Messages keep the words OCI clients match on: podman and
 * containerd look for "does not exist" (unknown container), "container not running" (kill of a
 * stopped container) and "executable file not found" (exit code 127).
 */
export class ContainerError extends VesselError {}

/** A config.json that breaks the runtime spec; `details.problems` lists every problem found. */
export class SpecError extends ContainerError {}

export function notExist(id: string): ContainerError {
  return new ContainerError("not_found", `container "${id}" does not exist`, { id });
}

export function notRunning(id: string): ContainerError {
  return new ContainerError("not_running", `container "${id}": container not running`, { id });
}
