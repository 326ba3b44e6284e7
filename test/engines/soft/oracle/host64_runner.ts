/**
 * Runs the x87 snippets natively on the host CPU in a 64-bit Linux process: x87 in a 64-bit
 * process is the same x87 unit (SDM vol. 1 8.1: the x87 FPU's state and instructions do not
 * depend on the operating mode), so this is the hardware oracle for the x87 on hosts that cannot
 * execute 32-bit code, where neither the i386 process nor KVM runs.
 *
 * It runs only snippets that mean the same as 64-bit code (`SnippetInput.code64`, from cases
 * marked `sameIn64`: x87 work, plain register moves and compares, SETcc, no stack and no 32-bit
 * address forms); every other case needs "i386" and this runner sits it out. Some encodings are
 * longer in 64-bit code (MOV AX, moffs32 does not exist there), so instructions sit at other
 * addresses: the ending RIP is mapped back to the 32-bit instruction's address, and the x87
 * instruction pointer that FNSTENV/FNSAVE/FXSAVE store (`relocatesCode`) is not compared (cases
 * name those bytes in `ipData`). The data pointer and the formats are the same (32-bit formats
 * without REX.W, SDM vol. 1 8.1.10).
 *
 * The ELF, written with nasm like i386_process.ts: a loader at 0x10000000 installs the signal
 * handlers (SA_RESTORER is required on x86-64; the handler never returns), loads RFLAGS and the
 * registers (zero-extended 32-bit values) and jumps to the code at LAYOUT.code; the data area at
 * LAYOUT.data, the stack below LAYOUT.stackTop. The handler writes the sigcontext
 * (arch/x86/include/uapi/asm/sigcontext.h, struct sigcontext_64), the head of siginfo and the data
 * area to stdout. Registers are reported as their low 32 bits.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { arch, tmpdir } from "node:os";
import { join } from "node:path";
import { assemble, nasmUnavailable } from "./nasm.js";
import { reportedVector } from "./signal_vector.js";
import {
  DATA_SIZE,
  LAYOUT,
  type Need,
  REG_NAMES,
  type Regs,
  type SnippetInput,
  type SnippetResult,
  type SnippetRunner,
  snippetSource64,
} from "./snippet.js";

/** struct sigcontext_64, in qwords. */
const SC = {
  rdi: 8,
  rsi: 9,
  rbp: 10,
  rbx: 11,
  rdx: 12,
  rax: 13,
  rcx: 14,
  rsp: 15,
  rip: 16,
  eflags: 17,
  err: 19,
  trapno: 20,
  cr2: 22,
};
const SC_BYTES = 192;
/** siginfo_t's head on x86-64: si_signo, si_errno, si_code, padding, si_addr. */
const SI_BYTES = 24;
const REPORT_BYTES = SC_BYTES + SI_BYTES + DATA_SIZE;
const REG64: Record<(typeof REG_NAMES)[number], keyof typeof SC> = {
  eax: "rax",
  ecx: "rcx",
  edx: "rdx",
  ebx: "rbx",
  esp: "rsp",
  ebp: "rbp",
  esi: "rsi",
  edi: "rdi",
};

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
BITS 64
DEFAULT ABS
section .loader start=0 vstart=0x10000000
ehdr:
  db 0x7f, "ELF", 2, 1, 1, 0
  times 8 db 0
  dw 2, 62                        ; ET_EXEC, EM_X86_64
  dd 1
  dq _start, phdrs - ehdr, 0
  dd 0
  dw 64, 56, 4, 0, 0, 0           ; ehsize, phentsize, phnum
phdrs:
  dd 1, 7
  dq 0, 0x10000000, 0x10000000, loader_end - ehdr, loader_end - ehdr, 0x1000
  dd 1, 7
  dq ${codeFile}, ${LAYOUT.code}, ${LAYOUT.code}, ${code.length}, 0x100000, 0x1000
  dd 1, 6
  dq ${dataFile}, ${LAYOUT.data}, ${LAYOUT.data}, ${data.length}, 0x100000, 0x1000
  dd 1, 6                         ; alternate signal stack (bss)
  dq 0, 0x10200000, 0x10200000, 0, 0x10000, 0x1000
_start:
  mov eax, 131                    ; sigaltstack(&ss, 0)
  mov edi, altstack
  xor esi, esi
  syscall
${signals
  .map((s) =>
    [
      "  mov eax, 13                     ; rt_sigaction(sig, &act, 0, 8)",
      `  mov edi, ${s}`,
      "  mov esi, act",
      "  xor edx, edx",
      "  mov r10d, 8",
      "  syscall",
    ].join("\n"),
  )
  .join("\n")}
  push qword ${eflags >>> 0}
  popfq
  mov eax, ${regs.eax >>> 0}
  mov ecx, ${regs.ecx >>> 0}
  mov edx, ${regs.edx >>> 0}
  mov ebx, ${regs.ebx >>> 0}
  mov ebp, ${regs.ebp >>> 0}
  mov esi, ${regs.esi >>> 0}
  mov edi, ${regs.edi >>> 0}
  mov esp, ${regs.esp >>> 0}
  jmp [entry]
handler:                          ; (sig rdi, siginfo * rsi, ucontext * rdx) on the alternate stack
  mov r12, rsi
  lea r13, [rdx+40]               ; uc_flags, uc_link, uc_stack (24): then uc_mcontext
  mov eax, 1                      ; write(1, sigcontext, SC_BYTES)
  mov edi, 1
  mov rsi, r13
  mov edx, ${SC_BYTES}
  syscall
  mov eax, 1
  mov edi, 1
  mov rsi, r12
  mov edx, ${SI_BYTES}
  syscall
  mov eax, 1
  mov edi, 1
  mov esi, ${LAYOUT.data}
  mov edx, ${DATA_SIZE}
  syscall
  mov eax, 60                     ; exit(0)
  xor edi, edi
  syscall
restorer:
  ud2
  align 8
entry: dq ${LAYOUT.code}
act: dq handler, 0x0c000004, restorer, 0   ; SA_RESTORER | SA_ONSTACK | SA_SIGINFO
altstack: dq 0x10200000
  dd 0, 0
  dq 0x10000
loader_end:
section .snippet start=${codeFile} vstart=${LAYOUT.code}
${db(code)}
section .data start=${dataFile} vstart=${LAYOUT.data}
${db(data)}
`;
}

export class Host64Runner implements SnippetRunner {
  readonly name = "host64";
  readonly kind = "hardware";
  readonly relocatesCode = true;
  private dir: string | undefined;
  private count = 0;

  async unavailable(): Promise<string | null> {
    const nasm = nasmUnavailable();
    if (nasm) return nasm;
    if (arch() !== "x64") return `the host CPU is ${arch()}, not x86-64`;
    try {
      const code = assemble(snippetSource64("fld1"));
      const r = await this.run({
        code,
        code64: { code, offsets: new Map([[code.length - 1, code.length - 1]]) },
      });
      if (r.vector !== 13) return `a 64-bit HLT ended with vector ${r.vector}, not #GP`;
    } catch (e) {
      return `cannot run a 64-bit oracle process here: ${(e as Error).message.split("\n")[0]}`;
    }
    return null;
  }

  async cannot(need: Need): Promise<string | null> {
    return need === "i386"
      ? "a 64-bit process runs only the x87 cases whose code means the same in 64-bit mode"
      : null;
  }

  async run(input: SnippetInput): Promise<SnippetResult> {
    if (input.code64 === undefined)
      throw new Error("host64 runs only snippets given as 64-bit code too (code64)");
    const { code, offsets } = input.code64;
    if (this.dir === undefined) {
      const dir = mkdtempSync(join(tmpdir(), "vessel-host64-oracle-"));
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
    const elf = assemble(elfSource(code, data, regs, ((input.eflags ?? 0) & 0xcd5) | 2));
    const path = join(this.dir, `snippet${this.count++ % 8}`);
    writeFileSync(path, elf);
    chmodSync(path, 0o755);
    const r = spawnSync(path, [], { timeout: 10_000, maxBuffer: 1 << 20 });
    if (r.error) throw new Error(`64-bit snippet failed to run: ${r.error.message}`);
    const out = r.stdout;
    if (out.length < REPORT_BYTES) {
      throw new Error(`64-bit snippet ended without a report (status ${r.status}, signal ${r.signal})`);
    }
    const low = (q: number) => out.readUInt32LE(8 * q);
    const result: Regs = { eax: 0, ecx: 0, edx: 0, ebx: 0, esp: 0, ebp: 0, esi: 0, edi: 0 };
    for (const n of REG_NAMES) result[n] = low(SC[REG64[n]]);
    const vector = reportedVector(low(SC.trapno), out.readInt32LE(SC_BYTES), out.readInt32LE(SC_BYTES + 8));
    const rip = low(SC.rip);
    const at32 = offsets.get(rip - LAYOUT.code);
    if (at32 === undefined) {
      throw new Error(
        `the 64-bit snippet ended at 0x${rip.toString(16)}, which is no instruction start of it`,
      );
    }
    return {
      regs: result,
      eflags: low(SC.eflags),
      eip: LAYOUT.code + at32,
      vector,
      errorCode: low(SC.err),
      ...(vector === 14 ? { cr2: low(SC.cr2) } : {}),
      data: new Uint8Array(out.subarray(SC_BYTES + SI_BYTES, REPORT_BYTES)),
    };
  }
}
