/**
 * Runs snippets on the real CPU through KVM with helper A's oracle (src/engines/kvm/oracle.ts:
 * ring 3, a 32-bit compatibility-mode segment under a small 64-bit payload kernel; on PVM hosts
 * the ring-3 code runs natively on the hardware). The oracle's memory map is the snippet ABI's
 * (code 0x400000, data 0x500000, user scratch up to 0x5fffff, so the stack below 0x600000 works).
 *
 * Finding on this host (PVM): the snippets do not run natively. Instructions that KVM's x86
 * instruction emulator (arch/x86/kvm/emulate.c) lacks raise #UD although the CPU has them:
 * x87 arithmetic (only FNINIT, FNSTCW, FNSTSW, FXSAVE/FXRSTOR work), DAA/AAA, ENTER with a nesting
 * level, BOUND, ARPL, POPCNT, CRC32, BMI, SSE; LZCNT/TZCNT execute as BSR/BSF. So the oracle here
 * is KVM's emulator, whose ALU operations run the real instruction on the host ("fastop"):
 * arithmetic results and flags still come from the hardware. `cannot()` probes each instruction
 * kind once and lets the cases that need it run on the software CPU alone.
 */
import { kvmOracleSkipReason, runCompat32OnKvm } from "../../../../src/engines/kvm/oracle.js";
import { nasmUnavailable } from "./nasm.js";
import { probeNeed } from "./probes.js";
import {
  DATA_SIZE,
  END_VECTOR,
  LAYOUT,
  type Need,
  type Regs,
  type SnippetInput,
  type SnippetResult,
  type SnippetRunner,
} from "./snippet.js";

export class KvmRunner implements SnippetRunner {
  readonly name = "kvm";
  readonly kind = "hardware";
  private readonly probed = new Map<Need, Promise<string | null>>();

  cannot(need: Need): Promise<string | null> {
    let p = this.probed.get(need);
    if (p === undefined) {
      p = probeNeed(need, "KVM on this host (its instruction emulator runs the snippets)", (input) =>
        this.run(input),
      );
      this.probed.set(need, p);
    }
    return p;
  }

  async unavailable(): Promise<string | null> {
    return nasmUnavailable() ?? kvmOracleSkipReason() ?? null;
  }

  async run(input: SnippetInput): Promise<SnippetResult> {
    const regs: Regs = {
      eax: 0,
      ecx: 0,
      edx: 0,
      ebx: 0,
      esp: LAYOUT.stackTop,
      ebp: 0,
      esi: 0,
      edi: 0,
      ...input.regs,
    };
    for (const k of Object.keys(regs) as (keyof Regs)[]) regs[k] >>>= 0;
    const r = await runCompat32OnKvm(
      input.code,
      { regs, eflags: (input.eflags ?? 0x202) >>> 0 },
      input.data ?? new Uint8Array(DATA_SIZE),
    );
    if (r.fault?.vector === -1) throw new Error("the snippet timed out on KVM");
    // Without a fault the snippet ran into the HLT the oracle appends after the code; ours ends
    // with its own HLT first, so this only happens for code that jumps past its end.
    const fault = r.fault ?? { vector: END_VECTOR, errorCode: 0, eip: LAYOUT.code + input.code.length };
    const out: Regs = { eax: 0, ecx: 0, edx: 0, ebx: 0, esp: 0, ebp: 0, esi: 0, edi: 0 };
    for (const k of Object.keys(out) as (keyof Regs)[]) out[k] = r.regs[k] >>> 0;
    return {
      regs: out,
      eflags: r.eflags >>> 0,
      eip: fault.eip >>> 0,
      vector: fault.vector,
      errorCode: fault.errorCode >>> 0,
      ...(fault.cr2 === undefined ? {} : { cr2: fault.cr2 >>> 0 }),
      data: r.data.slice(0, DATA_SIZE),
    };
  }
}
