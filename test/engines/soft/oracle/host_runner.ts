/**
 * Runs snippets natively on the host CPU, as a 32-bit Linux process: the hardware itself is the
 * oracle, for every instruction it has (on this kind of host the KVM oracle cannot run x87, DAA,
 * ENTER with nesting...: see kvm_runner.ts).
 *
 * For each snippet a static i386 ELF is written with nasm (no linker, no libc): a loader segment
 * at 0x08048000 installs SIGSEGV/SIGILL/SIGFPE/SIGBUS/SIGTRAP handlers on an alternate stack, loads
 * EFLAGS and the general registers and jumps to the snippet, which the ELF maps at LAYOUT.code
 * (0x400000-0x4fffff), with the data area at LAYOUT.data and zeroed scratch up to 0x5fffff (the
 * stack below 0x600000): the same map as the KVM oracle. The END marker's HLT raises #GP; the
 * kernel reports the exception in the signal's sigcontext (trapno = vector, err = error code,
 * EIP, registers, EFLAGS), which the handler writes to stdout with the data area.
 *
 * Differences from the other runners, inherent to a user process: IF reads as 1 (and the oracle
 * compares without IF), segment selectors are Linux's (CS 0x23, DS 0x2b).
 * Needs a kernel that runs i386 binaries (CONFIG_IA32_EMULATION) on an x86 host.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { arch, tmpdir } from "node:os";
import { join } from "node:path";
import { assemble, nasmUnavailable } from "./nasm.js";
import {
  DATA_SIZE,
  LAYOUT,
  REG_NAMES,
  type Regs,
  type SnippetInput,
  type SnippetResult,
  type SnippetRunner,
} from "./snippet.js";

/** i386 sigcontext (arch/x86/include/uapi/asm/sigcontext.h, struct sigcontext_32), in dwords. */
const SC = {
  edi: 4,
  esi: 5,
  ebp: 6,
  esp: 7,
  ebx: 8,
  edx: 9,
  ecx: 10,
  eax: 11,
  trapno: 12,
  err: 13,
  eip: 14,
  eflags: 16,
};
const SC_BYTES = 88;

function elfSource(code: Uint8Array, data: Uint8Array, regs: Regs, eflags: number): string {
  const codeFile = 0x1000;
  const dataFile = codeFile + Math.ceil(code.length / 0x1000) * 0x1000;
  const db = (b: Uint8Array) => {
    const lines: string[] = [];
    for (let i = 0; i < b.length; i += 32) lines.push(`  db ${Array.from(b.subarray(i, i + 32)).join(",")}`);
    return lines.join("\n");
  };
  const signals = [11, 4, 8, 7, 5]; // SEGV ILL FPE BUS TRAP
  return `
BITS 32
section .loader start=0 vstart=0x08048000
ehdr:
  db 0x7f, "ELF", 1, 1, 1, 0
  times 8 db 0
  dw 2, 3                         ; ET_EXEC, EM_386
  dd 1, _start, phdrs - ehdr, 0, 0
  dw 52, 32, 4, 0, 0, 0           ; ehsize, phentsize, phnum
phdrs:
  dd 1, 0, 0x08048000, 0x08048000, loader_end - ehdr, loader_end - ehdr, 7, 0x1000
  dd 1, ${codeFile}, ${LAYOUT.code}, ${LAYOUT.code}, ${code.length}, 0x100000, 7, 0x1000
  dd 1, ${dataFile}, ${LAYOUT.data}, ${LAYOUT.data}, ${data.length}, 0x100000, 6, 0x1000
  dd 1, 0, 0x08200000, 0x08200000, 0, 0x10000, 6, 0x1000   ; alternate signal stack (bss)
_start:
  mov eax, 186                    ; sigaltstack(&ss, 0)
  mov ebx, altstack
  xor ecx, ecx
  int 0x80
${signals
  .map((s) =>
    [
      "  mov eax, 174                    ; rt_sigaction(sig, &act, 0, 8)",
      `  mov ebx, ${s}`,
      "  mov ecx, act",
      "  xor edx, edx",
      "  mov esi, 8",
      "  int 0x80",
    ].join("\n"),
  )
  .join("\n")}
  push dword ${eflags >>> 0}
  popfd
  mov eax, ${regs.eax >>> 0}
  mov ecx, ${regs.ecx >>> 0}
  mov edx, ${regs.edx >>> 0}
  mov ebx, ${regs.ebx >>> 0}
  mov ebp, ${regs.ebp >>> 0}
  mov esi, ${regs.esi >>> 0}
  mov edi, ${regs.edi >>> 0}
  mov esp, ${regs.esp >>> 0}
  jmp [entry]
handler:                          ; (sig, siginfo *, ucontext *) on the alternate stack
  mov esi, [esp+12]
  add esi, 20                     ; uc_flags, uc_link, uc_stack: then the sigcontext
  mov eax, 4
  mov ebx, 1
  mov ecx, esi
  mov edx, ${SC_BYTES}
  int 0x80
  mov eax, 4
  mov ebx, 1
  mov ecx, ${LAYOUT.data}
  mov edx, ${DATA_SIZE}
  int 0x80
  mov eax, 1
  xor ebx, ebx
  int 0x80
entry: dd ${LAYOUT.code}
act: dd handler, 0x08000004, 0, 0, 0   ; SA_ONSTACK | SA_SIGINFO
altstack: dd 0x08200000, 0, 0x10000
loader_end:
section .snippet start=${codeFile} vstart=${LAYOUT.code}
${db(code)}
section .data start=${dataFile} vstart=${LAYOUT.data}
${db(data)}
`;
}

export class HostRunner implements SnippetRunner {
  readonly name = "host";
  private dir: string | undefined;
  private count = 0;

  async unavailable(): Promise<string | null> {
    const nasm = nasmUnavailable();
    if (nasm) return nasm;
    if (arch() !== "x64" && arch() !== "ia32") return `the host CPU is ${arch()}, not x86`;
    try {
      const r = await this.run({ code: assemble("BITS 32\nhlt\n") });
      if (r.vector !== 13) return `a native i386 HLT ended with vector ${r.vector}, not #GP`;
    } catch (e) {
      return `cannot run native i386 programs here: ${(e as Error).message.split("\n")[0]}`;
    }
    return null;
  }

  async run(input: SnippetInput): Promise<SnippetResult> {
    if (this.dir === undefined) {
      const dir = mkdtempSync(join(tmpdir(), "vessel-host-oracle-"));
      process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
      this.dir = dir;
    }
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
    const data = input.data ?? new Uint8Array(DATA_SIZE);
    const elf = assemble(elfSource(input.code, data, regs, ((input.eflags ?? 0) & 0xcd5) | 2));
    const path = join(this.dir, `snippet${this.count++ % 8}`);
    writeFileSync(path, elf);
    chmodSync(path, 0o755);
    const r = spawnSync(path, [], { timeout: 5000, maxBuffer: 1 << 20 });
    if (r.error) throw new Error(`native snippet failed to run: ${r.error.message}`);
    const out = r.stdout;
    if (out.length < SC_BYTES + DATA_SIZE) {
      throw new Error(`native snippet ended without a report (status ${r.status}, signal ${r.signal})`);
    }
    const word = (i: number) => out.readUInt32LE(4 * i);
    const result: Regs = { eax: 0, ecx: 0, edx: 0, ebx: 0, esp: 0, ebp: 0, esi: 0, edi: 0 };
    for (const n of REG_NAMES) result[n] = word(SC[n]);
    return {
      regs: result,
      eflags: word(SC.eflags),
      eip: word(SC.eip),
      vector: word(SC.trapno),
      errorCode: word(SC.err),
      data: new Uint8Array(out.subarray(SC_BYTES, SC_BYTES + DATA_SIZE)),
    };
  }
}
