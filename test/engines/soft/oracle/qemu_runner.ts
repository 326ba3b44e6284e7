/**
 * Runs snippets under QEMU's user-mode emulator (`qemu-i386-static`, Debian's qemu-user-static):
 * the same i386 ELF as host_runner.ts, translated by QEMU's TCG onto the 64-bit host, without
 * kernel help. It is the independent 32-bit oracle on hosts that cannot execute i386 code (no
 * ia32 emulation, no KVM), and runs wherever it is installed, so hosts that can run i386 code
 * test it against the hardware too.
 *
 * Where QEMU is not the hardware (qemu-i386 7.2, `-cpu max`), the runner says so and sits out:
 * - it reports every signal with trapno -1: the vector is read back from the signal
 *   (signal_vector.ts), which cannot tell #OF and #BR from #GP (probed: "into", "bound");
 * - its page-fault error code knows U/S and W/R but not P: QEMU's own reservations of the guest
 *   address space make an unmapped page look present (errorCodeBits);
 * - EFLAGS in its signal frame lacks RF, which a fault pushes (probed: "rf");
 * - its CMPXCHG8B changes CF and PF, which it must leave alone, and in some programs it aborts
 *   QEMU ("rcu_read_unlock: Assertion `p_rcu_reader->depth != 0' failed", or SIGSEGV; seen
 *   after an IMUL in the same block, and on LOCK CMPXCHG8B of an unaligned operand): probed as
 *   "cmpxchg8b", and random.test.ts gives it twins of those programs with XLAT in its place;
 * - its x87 (softfloat) is not the hardware's: no stack faults (IE|SF on overflow/underflow), no
 *   DE for a denormal single loaded by FLD, 0 instead of 1s in FNSTENV's reserved words, no #MF
 *   for an unmasked exception in user mode, and FSIN/FCOS/FPTAN through the host's double
 *   libm. So it sits out every x87 case: the hardware in a 64-bit process (host64_runner.ts) is
 *   the x87 oracle wherever x86-64 code runs.
 * Override the binary with VESSEL_QEMU_I386 (a path).
 */
import { existsSync } from "node:fs";
import { I386Process } from "./i386_process.js";
import { assemble, nasmUnavailable } from "./nasm.js";
import { probeNeed } from "./probes.js";
import type { Need, SnippetInput, SnippetResult, SnippetRunner } from "./snippet.js";

export const QEMU_I386 = process.env.VESSEL_QEMU_I386 ?? "/usr/bin/qemu-i386-static";

/** Page-fault error code bits QEMU user mode gets right: W/R (bit 1) and U/S (bit 2). */
const PF_BITS_KNOWN = 0x6;

const X87_DIFFERS =
  "QEMU's softfloat x87 is not the hardware's (no stack faults, no DE on FLD m32, FNSTENV's reserved words 0): host64 is the x87 oracle";

export class QemuRunner implements SnippetRunner {
  readonly name = "qemu";
  readonly kind = "emulator";
  private readonly process = new I386Process("qemu-i386", (elf) => [QEMU_I386, ["-cpu", "max", elf]]);
  private readonly probed = new Map<Need, Promise<string | null>>();

  async unavailable(): Promise<string | null> {
    const nasm = nasmUnavailable();
    if (nasm) return nasm;
    if (!existsSync(QEMU_I386)) {
      return `${QEMU_I386} is missing: install Debian's qemu-user-static (scripts/setup-host.sh)`;
    }
    try {
      const r = this.process.run({ code: assemble("BITS 32\nhlt\n") });
      if (r.result.vector !== 13)
        return `an i386 HLT under ${QEMU_I386} ended with vector ${r.result.vector}, not #GP`;
    } catch (e) {
      return `${QEMU_I386} cannot run the oracle's i386 ELF: ${(e as Error).message.split("\n")[0]}`;
    }
    return null;
  }

  cannot(need: Need): Promise<string | null> {
    if (need === "x87") return Promise.resolve(X87_DIFFERS);
    let p = this.probed.get(need);
    if (p === undefined) {
      p = probeNeed(need, "qemu-i386 (user mode)", (input) => this.run(input));
      this.probed.set(need, p);
    }
    return p;
  }

  errorCodeBits(vector: number): number {
    return vector === 14 ? PF_BITS_KNOWN : -1;
  }

  async run(input: SnippetInput): Promise<SnippetResult> {
    return this.process.run(input).result;
  }
}
