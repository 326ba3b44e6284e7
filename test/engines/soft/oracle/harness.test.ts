/**
 * The oracle harness itself, with scripted runners: a comparison no oracle ran fails and says
 * what to install; a case with the SDM's values is checked against them when every oracle sits
 * it out; QEMU's unknown page-fault bits are not compared; signals map back to vectors; 64-bit
 * code maps back to 32-bit addresses.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { OracleCase } from "./cases.js";
import { longModeCode, noOracleMessage, runCase } from "./harness.js";
import { nasmUnavailable } from "./nasm.js";
import { vectorFromSignal } from "./signal_vector.js";
import { DATA_SIZE, LAYOUT, type Need, type SnippetResult, type SnippetRunner } from "./snippet.js";

const nasm = nasmUnavailable();

function result(over: Partial<SnippetResult> = {}): SnippetResult {
  return {
    regs: { eax: 0, ecx: 0, edx: 0, ebx: 0, esp: LAYOUT.stackTop, ebp: 0, esi: 0, edi: 0 },
    eflags: 0x202,
    eip: LAYOUT.code,
    vector: 13,
    errorCode: 0,
    data: new Uint8Array(DATA_SIZE),
    ...over,
  };
}

/** A runner that answers every snippet with `r`. */
function scripted(
  name: string,
  kind: SnippetRunner["kind"],
  r: SnippetResult,
  extra: Partial<Pick<SnippetRunner, "cannot" | "errorCodeBits">> = {},
): SnippetRunner {
  return { name, kind, unavailable: async () => null, run: async () => r, ...extra };
}

describe("oracle harness", { skip: nasm ?? false }, () => {
  const hlt: OracleCase = { name: "just the end marker", asm: "" };

  it("fails a comparison that only the CPU under test ran, naming what is missing and how to get it", async () => {
    const report = await runCase(hlt, [scripted("soft", "tested", result())], true);
    assert.equal(report.oracles, 0);
    assert.match(report.problems.join("\n"), /no oracle ran this case/);
    const message = noOracleMessage(
      { available: [], missing: { qemu: "/usr/bin/qemu-i386-static is missing", host: "Exec format error" } },
      [],
    );
    assert.match(message, /qemu: .*install Debian's qemu-user-static \(scripts\/setup-host\.sh\)/);
    assert.match(message, /host: Exec format error/);
  });

  it("checks a case with the SDM's values against them alone when every oracle sits it out", async () => {
    const c: OracleCase = { name: "eax = 1", asm: "mov eax, 1", want: { eax: 1 }, needs: ["bcd"] };
    const soft = scripted(
      "soft",
      "tested",
      result({ regs: { ...result().regs, eax: 1 }, eip: LAYOUT.code + 5 }),
    );
    const qemu = scripted("qemu", "emulator", result(), { cannot: async (need: Need) => `no ${need}` });
    const report = await runCase(c, [soft, qemu]);
    assert.deepEqual(report.problems, []);
    assert.equal(report.oracles, 0);
    assert.deepEqual(report.ran, ["soft"]);
    assert.deepEqual(report.notes, ["qemu sat out: no bcd"]);
  });

  it("compares a page fault's error code with QEMU on the bits it knows only (U/S, W/R)", async () => {
    const c: OracleCase = { name: "write to an unmapped page", asm: "mov [0x600010], eax", anyEnd: true };
    const fault = (errorCode: number) => result({ vector: 14, errorCode, cr2: 0x600010 });
    const qemu = (errorCode: number) =>
      scripted("qemu", "emulator", fault(errorCode), { errorCodeBits: (v) => (v === 14 ? 6 : -1) });
    const same = await runCase(c, [scripted("soft", "tested", fault(6)), qemu(7)], true);
    assert.deepEqual(same.problems, []);
    const differ = await runCase(c, [scripted("soft", "tested", fault(6)), qemu(5)], true);
    assert.match(differ.problems.join("\n"), /error code: 0x00000006 vs 0x00000004/);
  });

  it("maps a 64-bit instruction's offset back to the same instruction's 32-bit offset", () => {
    // MOV [moffs], AX is 6 bytes in 32-bit code and 8 (ModRM + SIB) in 64-bit code.
    const { code, offsets } = longModeCode("fld1\nmov [DATA+4], ax\nfld1");
    assert.equal(offsets.get(0), 0);
    assert.equal(offsets.get(2), 2);
    assert.equal(offsets.get(10), 8);
    assert.equal(offsets.get(code.length - 1), 10, "the END marker's HLT");
  });
});

describe("signals back to vectors (trapno -1 under QEMU)", () => {
  it("reads the vector from the signal and si_code as Linux raises them", () => {
    assert.equal(vectorFromSignal(8, 1), 0, "SIGFPE FPE_INTDIV: #DE");
    assert.equal(vectorFromSignal(8, 3), 16, "SIGFPE FPE_FLTDIV: #MF");
    assert.equal(vectorFromSignal(4, 2), 6, "SIGILL: #UD");
    assert.equal(vectorFromSignal(5, 0x80), 3, "SIGTRAP SI_KERNEL: #BP");
    assert.equal(vectorFromSignal(5, 2), 1, "SIGTRAP TRAP_TRACE: #DB");
    assert.equal(vectorFromSignal(11, 1), 14, "SIGSEGV SEGV_MAPERR: #PF");
    assert.equal(vectorFromSignal(11, 2), 14, "SIGSEGV SEGV_ACCERR: #PF");
    assert.equal(vectorFromSignal(11, 0x80), 13, "SIGSEGV SI_KERNEL: #GP");
    assert.equal(vectorFromSignal(7, 1), 17, "SIGBUS BUS_ADRALN: #AC");
    assert.throws(() => vectorFromSignal(9, 0), /signal 9/);
  });
});
