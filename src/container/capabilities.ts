import { readFileSync } from "node:fs";

/** Linux capability numbers (include/uapi/linux/capability.h, kernel 6.1). */
export const CAPABILITIES: Readonly<Record<string, number>> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_DAC_READ_SEARCH: 2,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_LINUX_IMMUTABLE: 9,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_BROADCAST: 11,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_IPC_LOCK: 14,
  CAP_IPC_OWNER: 15,
  CAP_SYS_MODULE: 16,
  CAP_SYS_RAWIO: 17,
  CAP_SYS_CHROOT: 18,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_PACCT: 20,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_BOOT: 22,
  CAP_SYS_NICE: 23,
  CAP_SYS_RESOURCE: 24,
  CAP_SYS_TIME: 25,
  CAP_SYS_TTY_CONFIG: 26,
  CAP_MKNOD: 27,
  CAP_LEASE: 28,
  CAP_AUDIT_WRITE: 29,
  CAP_AUDIT_CONTROL: 30,
  CAP_SETFCAP: 31,
  CAP_MAC_OVERRIDE: 32,
  CAP_MAC_ADMIN: 33,
  CAP_SYSLOG: 34,
  CAP_WAKE_ALARM: 35,
  CAP_BLOCK_SUSPEND: 36,
  CAP_AUDIT_READ: 37,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
  CAP_CHECKPOINT_RESTORE: 40,
};

/** A set of capability names as the 64-bit mask capset(2) and PR_CAPBSET_DROP work with. */
export function capMask(names: readonly string[] | undefined): bigint {
  let m = 0n;
  for (const n of names ?? []) {
    const bit = CAPABILITIES[n];
    if (bit !== undefined) m |= 1n << BigInt(bit);
  }
  return m;
}

/**
 * The capabilities this runtime itself holds (CapBnd of /proc/self/status). A container cannot be
 * given more: on this kind of host root lacks CAP_SYS_RESOURCE, and asking capset(2) for it would
 * fail the whole start, so the plan masks requests with this set and the runtime says so in --debug.
 */
export function availableCaps(): bigint {
  try {
    const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    return m ? BigInt(`0x${m[1]}`) : (1n << 41n) - 1n;
  } catch {
    return (1n << 41n) - 1n;
  }
}
