/**
 * Runs snippets natively on the host CPU, as a 32-bit Linux process (i386_process.ts): the
 * hardware itself is the oracle, for every instruction it has (on a PVM host the KVM oracle
 * cannot run x87, DAA, ENTER with nesting...: see kvm_runner.ts).
 *
 * Needs a kernel that runs i386 binaries (CONFIG_IA32_EMULATION, not turned off with
 * ia32_emulation=0) on an x86 host. The hosts CI runs on now cannot ("Exec format error"); there
 * qemu_runner.ts runs the same ELFs, and host64_runner.ts runs the x87 cases on the hardware.
 * VESSEL_HOST_I386=0 makes this probe answer "no" on a host that could, to test that path.
 */
import { arch } from "node:os";
import { I386Process } from "./i386_process.js";
import { assemble, nasmUnavailable } from "./nasm.js";
import type { SnippetInput, SnippetResult, SnippetRunner } from "./snippet.js";

/** The environment override of the i386 probe: "0" says this host cannot run i386 code. */
export function hostI386Override(): string | null {
  return process.env.VESSEL_HOST_I386 === "0"
    ? "VESSEL_HOST_I386=0: treating this host as one that cannot execute i386 code"
    : null;
}

export class HostRunner implements SnippetRunner {
  readonly name = "host";
  readonly kind = "hardware";
  private readonly process = new I386Process("native i386 process", (elf) => [elf, []]);

  async unavailable(): Promise<string | null> {
    const nasm = nasmUnavailable();
    if (nasm) return nasm;
    const override = hostI386Override();
    if (override) return override;
    if (arch() !== "x64" && arch() !== "ia32") return `the host CPU is ${arch()}, not x86`;
    try {
      const r = this.process.run({ code: assemble("BITS 32\nhlt\n") });
      // The kernel fills in trapno; an emulator (QEMU) leaves it -1: then this is not the hardware.
      if (r.trapno !== 13) {
        return `a native i386 HLT was reported with trapno ${r.trapno}, not 13 (#GP): the ELF did not run on the host CPU`;
      }
    } catch (e) {
      return `this host cannot execute i386 code: ${(e as Error).message.split("\n")[0]}`;
    }
    return null;
  }

  async run(input: SnippetInput): Promise<SnippetResult> {
    return this.process.run(input).result;
  }
}
