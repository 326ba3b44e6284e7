/**
 * How the software CPU executes guest code (`--technique`): the interpreter (the reference every
 * other technique is tested against) or the binary translator (engines/soft/bt/). Later
 * techniques (trap-and-emulate, its paravirtual variant) join this list.
 */
export type SoftTechnique = "interp" | "bt";

export const SOFT_TECHNIQUES: readonly SoftTechnique[] = ["interp", "bt"];

/** The technique a soft-engine machine uses when none is asked for. */
export const DEFAULT_SOFT_TECHNIQUE: SoftTechnique = "interp";

export function isSoftTechnique(text: string): text is SoftTechnique {
  return (SOFT_TECHNIQUES as readonly string[]).includes(text);
}
