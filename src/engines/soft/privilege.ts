/**
 * Every privilege check of the CPU in one place (SDM vol. 3 ch. 5 "Protection"): CPL 0-only
 * instructions, IOPL-sensitive instructions, the TSS I/O permission bitmap. Techniques that
 * deprivilege the guest (trap-and-emulate, binary translation) install a hook here to see and
 * redirect each check instead of patching the handlers.
 */
import type { Cpu } from "./cpu.js";
import { Flag, Seg } from "./registers.js";

/**
 * A hook sees each privileged event before the architectural check. Returning true means "the
 * hook handled it" (the instruction proceeds as if allowed); false falls through to the check.
 */
export interface PrivilegeHook {
  /** A CPL-0-only instruction (`name` is its mnemonic). */
  privileged?(c: Cpu, name: string): boolean;
  /** An IOPL-sensitive instruction: CLI, STI, IN, OUT, INS, OUTS, POPF/IRET IF changes. */
  iopl?(c: Cpu, name: string): boolean;
}

let hook: PrivilegeHook | undefined;

/** Installs (or removes, with undefined) the privilege hook of a VMM technique. */
export function setPrivilegeHook(h: PrivilegeHook | undefined): void {
  hook = h;
}

/** Counts of sensitive instructions executed outside ring 0 that do not trap (PUSHF, SGDT, ...). */
export const sensitiveNoTrap = new Map<string, number>();

function iopl(c: Cpu): number {
  return (c.flags & Flag.IOPL) >>> 12;
}

/** #GP(0) unless CPL is 0 (LGDT, MOV CRn, HLT, WRMSR, ...). Real mode is CPL 0. */
export function requireCpl0(c: Cpu, name: string): void {
  if (c.cpl === 0) return;
  if (hook?.privileged?.(c, name) === true) return;
  c.gp(0);
}

/** CLI / STI: #GP(0) when CPL > IOPL in protected mode (no VME/PVI support). */
export function requireIopl(c: Cpu, name: string): void {
  if (!c.protectedMode || c.cpl <= iopl(c)) return;
  if (hook?.iopl?.(c, name) === true) return;
  c.gp(0);
}

/** Whether POPF/IRET at the current CPL may change IF (CPL <= IOPL) and IOPL (CPL 0). */
export function canChangeIf(c: Cpu): boolean {
  return !c.protectedMode || c.cpl <= iopl(c);
}
export function canChangeIopl(c: Cpu): boolean {
  return c.cpl === 0;
}

/**
 * IN/OUT/INS/OUTS: allowed when CPL <= IOPL, else every bit of the port range must be clear in
 * the TSS I/O permission bitmap (SDM vol. 1 ch. 19.5.2); #GP(0) otherwise.
 */
export function checkIo(c: Cpu, port: number, size: number): void {
  if (!c.protectedMode || c.cpl <= iopl(c)) return;
  if (hook?.iopl?.(c, "io") === true) return;
  const trBase = c.segBase[Seg.TR]!;
  const trLimit = c.segLimit[Seg.TR]! >>> 0;
  if ((c.segAttr[Seg.TR]! & 0xf) !== 0xb && (c.segAttr[Seg.TR]! & 0xf) !== 0x9) c.gp(0);
  if (trLimit < 0x67) c.gp(0);
  const mapBase = c.readSys16((trBase + 0x66) | 0);
  const byte = mapBase + (port >>> 3);
  if (byte + 1 > trLimit) c.gp(0);
  const bits = c.readSys16((trBase + byte) | 0);
  const mask = ((1 << size) - 1) << (port & 7);
  if ((bits & mask) !== 0) c.gp(0);
}
