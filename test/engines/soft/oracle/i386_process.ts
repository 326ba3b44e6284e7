/**
 * Runs a snippet as a 32-bit Linux process: natively on the host CPU (host_runner.ts) or under
 * QEMU's user-mode emulator (qemu_runner.ts). Both run the same ELF.
 *
 * For each snippet a static i386 ELF is written with nasm (no linker, no libc): a loader segment
 * at 0x08048000 installs SIGSEGV/SIGILL/SIGFPE/SIGBUS/SIGTRAP handlers on an alternate stack, loads
 * EFLAGS and the general registers and jumps to the snippet, which the ELF maps at LAYOUT.code
 * (0x400000-0x4fffff), with the data area at LAYOUT.data and zeroed scratch up to 0x5fffff (the
 * stack below 0x600000): the same map as the KVM oracle. The END marker's HLT raises #GP; the
 * handler writes the signal's sigcontext (trapno = vector, err = error code, EIP, registers,
 * EFLAGS), the head of its siginfo (signal, si_code, si_addr: the vector when trapno is not
 * filled in, see signal_vector.ts) and the data area to stdout.
 *
 * Differences from the soft CPU inherent to a user process: IF reads as 1 and RF may be set (the
 * oracle compares neither), segment selectors are Linux's (CS 0x23, DS 0x2b).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assemble } from "./nasm.js";
import { reportedVector } from "./signal_vector.js";
import { DATA_SIZE, LAYOUT, REG_NAMES, type Regs, type SnippetInput, type SnippetResult } from "./snippet.js";

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
/** The head of siginfo_t (include/uapi/asm-generic/siginfo.h): si_signo, si_errno, si_code, si_addr. */
const SI_BYTES = 16;
const REPORT_BYTES = SC_BYTES + SI_BYTES + DATA_SIZE;

/**
 * e_machine EM_486 (6) rather than EM_386 (3): Linux's ia32 loader takes both
 * (arch/x86/include/asm/elf.h, elf_check_arch_ia32), and so does QEMU, but the binfmt_misc
 * entries that hand i386 ELFs to qemu-user (Debian's qemu-user-binfmt, or one a test registers for
 * debootstrap) match EM_386 only. So "native" really is the host CPU wherever the kernel can run
 * i386 code, and never an emulator in disguise.
 */
const EM_486 = 6;

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
  dw 2, ${EM_486}                   ; ET_EXEC, EM_486
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
  mov ecx, [esp+8]
  mov edx, ${SI_BYTES}
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

/** Raw report of one run: the result, and the sigcontext's trapno as the kernel (or QEMU) wrote it. */
export interface I386ProcessReport {
  result: SnippetResult;
  trapno: number;
  signal: number;
}

/**
 * Writes the snippet's ELF into a scratch directory and runs it with `launch` (the ELF's path ->
 * command and arguments).
 */
export class I386Process {
  private dir: string | undefined;
  private count = 0;

  constructor(
    private readonly what: string,
    private readonly launch: (elf: string) => [string, string[]],
  ) {}

  run(input: SnippetInput): I386ProcessReport {
    if (this.dir === undefined) {
      const dir = mkdtempSync(join(tmpdir(), "vessel-i386-oracle-"));
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
    const [command, args] = this.launch(path);
    const r = spawnSync(command, args, { timeout: 10_000, maxBuffer: 1 << 20 });
    if (r.error) throw new Error(`${this.what}: the snippet failed to run: ${r.error.message}`);
    const out = r.stdout;
    if (out.length < REPORT_BYTES) {
      const stderr = r.stderr.toString().trim().split("\n")[0] ?? "";
      throw new Error(
        `${this.what}: the snippet ended without a report (status ${r.status}, signal ${r.signal})${stderr ? `: ${stderr}` : ""}`,
      );
    }
    const word = (i: number) => out.readUInt32LE(4 * i);
    const result: Regs = { eax: 0, ecx: 0, edx: 0, ebx: 0, esp: 0, ebp: 0, esi: 0, edi: 0 };
    for (const n of REG_NAMES) result[n] = word(SC[n]);
    const signo = out.readInt32LE(SC_BYTES);
    const code = out.readInt32LE(SC_BYTES + 8);
    const vector = reportedVector(word(SC.trapno), signo, code);
    return {
      result: {
        regs: result,
        eflags: word(SC.eflags),
        eip: word(SC.eip),
        vector,
        errorCode: word(SC.err),
        ...(vector === 14 ? { cr2: out.readUInt32LE(SC_BYTES + 12) } : {}),
        data: new Uint8Array(out.subarray(SC_BYTES + SI_BYTES, REPORT_BYTES)),
      },
      trapno: word(SC.trapno) | 0,
      signal: signo,
    };
  }
}
