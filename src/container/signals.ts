import { constants } from "node:os";
import { ContainerError } from "./errors.js";

/** A signal as runc's kill takes it: "KILL", "SIGKILL", "9"; returns the number. */
export function parseSignal(sig: string | number): number {
  if (typeof sig === "number") return checked(sig, String(sig));
  const s = sig.trim().toUpperCase();
  if (/^\d+$/.test(s)) return checked(Number(s), sig);
  const name = (s.startsWith("SIG") ? s : `SIG${s}`) as keyof typeof constants.signals;
  const n = constants.signals[name];
  if (n === undefined) throw new ContainerError("bad_signal", `unknown signal "${sig}"`);
  return n;
}

function checked(n: number, text: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 64)
    throw new ContainerError("bad_signal", `invalid signal "${text}"`);
  return n;
}
