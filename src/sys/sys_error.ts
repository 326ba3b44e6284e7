import { constants } from "node:os";
import { VesselError } from "../errors.js";

const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);
}

/** The symbolic name of an errno value ("EACCES"), or "errno N" if unknown. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/**
 * A failed host system call (crun's `crun_make_error(err, errno, "open `%s`", path)`): the call as
 * it would be written ("ioctl(KVM_CREATE_VM)", "open(/dev/kvm)"), errno and its name.
 * `code` is "SYS_" + the errno name, so callers can branch on `err.code === "SYS_EACCES"`.
 */
export class SysError extends VesselError {
  readonly syscall: string;
  readonly errno: number;
  readonly errnoName: string;

  constructor(syscall: string, errno: number, hint?: string) {
    const name = errnoName(errno);
    super(
      `SYS_${name}`,
      `${syscall} failed: ${name} (errno ${errno})${hint === undefined ? "" : `; ${hint}`}`,
      { syscall, errno, errnoName: name },
    );
    this.syscall = syscall;
    this.errno = errno;
    this.errnoName = name;
  }
}
