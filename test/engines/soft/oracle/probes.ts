/**
 * Probes of what an oracle runner can run and report (`SnippetRunner.cannot`): one snippet per
 * instruction kind, with the end the hardware gives it (SDM vol. 2 for each instruction). A
 * runner whose result differs sits out the cases that need that kind, and says why.
 */
import { assemble } from "./nasm.js";
import { dataBytes, END_VECTOR, type Need, type SnippetResult, snippetSource } from "./snippet.js";

interface Probe {
  asm: string;
  /** The vector the hardware ends the probe with. */
  vector: number;
  /** EFLAGS bits the hardware has set in the exception's frame. */
  eflagsSet?: number;
  /** EFLAGS bits the hardware has clear in the exception's frame. */
  eflagsClear?: number;
  data?: Uint8Array;
}

const PROBES: Record<Exclude<Need, "i386">, Probe> = {
  x87: { asm: "fld1", vector: END_VECTOR },
  // ZE unmasked (control word 0x037b), 1/0, then the next waiting x87 instruction: #MF.
  "x87-unmasked": {
    asm: "fninit\nfldcw [DATA]\nfld1\nfldz\nfdivp st1, st0\nfld1",
    vector: 16,
    data: dataBytes([0x037b], 2),
  },
  bcd: { asm: "daa", vector: END_VECTOR },
  "enter-nested": { asm: "enter 8, 1", vector: END_VECTOR },
  // EAX = 1 outside the bounds [0, 0]: #BR.
  bound: { asm: "mov eax, 1\nbound eax, [DATA]", vector: 5 },
  into: { asm: "mov al, 0x7f\nadd al, 1\ninto", vector: 4 },
  // A fault pushes EFLAGS with RF set (SDM vol. 3 17.3.1.1); the HLT's #GP is a fault.
  rf: { asm: "nop", vector: END_VECTOR, eflagsSet: 0x10000 },
  // CMPXCHG8B writes ZF only (SDM vol. 2A CMPXCHG8B): CF stays as ADD left it (clear), ZF is
  // clear (EDX:EAX = 0:1 differs from the zeroed memory).
  cmpxchg8b: { asm: "add eax, 1\ncmpxchg8b [DATA]", vector: END_VECTOR, eflagsClear: 0x41 },
};

/**
 * Why `runner` cannot be trusted with `need` (null when it can): `run` is the runner's own.
 * `where` names the runner in the reason ("KVM on this host", "qemu-i386").
 */
export async function probeNeed(
  need: Need,
  where: string,
  run: (input: { code: Uint8Array; data?: Uint8Array }) => Promise<SnippetResult>,
): Promise<string | null> {
  if (need === "i386") return null;
  const p = PROBES[need];
  let r: SnippetResult;
  try {
    r = await run({ code: assemble(snippetSource(p.asm)), ...(p.data ? { data: p.data } : {}) });
  } catch (e) {
    return `${where} fails to run \`${p.asm.replace(/\n/g, "; ")}\`: ${(e as Error).message.split("\n")[0]}`;
  }
  const text = p.asm.replace(/\n/g, "; ");
  if (r.vector === 6 && p.vector !== 6) return `${where} raises #UD for \`${text}\``;
  if (r.vector !== p.vector) {
    return `${where} ends \`${text}\` with vector ${r.vector}, where the CPU raises vector ${p.vector}`;
  }
  const set = p.eflagsSet ?? 0;
  const clear = p.eflagsClear ?? 0;
  if ((r.eflags & set) !== set || (r.eflags & clear) !== 0) {
    return `${where} reports EFLAGS 0x${r.eflags.toString(16)} for \`${text}\`, where the CPU's has 0x${set.toString(16)} set and 0x${clear.toString(16)} clear`;
  }
  return null;
}
