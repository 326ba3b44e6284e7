/**
 * Hand-written differential cases, interpreter against translator (differential_harness.ts), for
 * what a translator gets wrong: self-modifying code (the same block, a block run before, a write
 * through another linear alias of the frame, a tight rewrite loop), REP string instructions cut by
 * a page fault mid-way and restarted, an interrupt arriving inside a hot loop of chained blocks,
 * jumps into the middle of an instruction, execution from an unmapped page, across a page end
 * into one, and from MMIO, instructions straddling a page boundary, and real-mode code. Each case
 * also checks that the reference run did what the case is about, so none passes vacuously; and
 * each runs with one long budget and with budgets that cut it at every few instructions.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { nasmUnavailable } from "../oracle/nasm.js";
import {
  compareOutcomes,
  type DiffCase,
  differential,
  exceptionLog,
  M,
  type Outcome,
  runCase,
  translatorNote,
} from "./differential_harness.js";

const skip = nasmUnavailable();
const EAX = 0;
const ECX = 1;
const EBX = 3;

const SCHEDULES = [[1 << 20], [1], [7, 64, 3, 65, 2047, 1, 100]];

/** Runs `c` both ways with SCHEDULES; `expect` checks the reference outcome. */
function agree(
  t: { diagnostic(s: string): void },
  c: DiffCase,
  expect: (o: Outcome) => void,
  end = "HLT with interrupts disabled",
): Outcome {
  const d = differential(c, SCHEDULES);
  t.diagnostic(translatorNote(d.translated));
  assert.ok(
    d.reference.report.startsWith(end),
    `the reference run of ${c.name} did not reach the END: ${d.reference.report.slice(0, 600)}`,
  );
  expect(d.reference);
  assert.deepEqual(d.problems, [], d.problems.join("\n"));
  return d.translated;
}

const vectors = (o: Outcome) => exceptionLog(o).map((e) => e.vector);

test("self-modifying code: a store patches a later instruction of the running block", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "patch later in the same block",
      body: `
  mov byte [patch+1], 0x05      ; C6 05 <patch+1> 05: the immediate of the MOV below
  add ebx, 1
patch:
  mov eax, 1                    ; B8 01 00 00 00, executed as B8 05 00 00 00
  mov [DATA], eax`,
    },
    (o) => assert.equal(o.regs[EAX], 5, "the patched immediate is the one executed (SDM vol. 3 ch. 11.6)"),
  );
});

test("self-modifying code: a block run before is rewritten between calls", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "rewrite a called function",
      body: `
  xor ecx, ecx
  xor ebx, ebx
again:
  call fn
  add ebx, eax
  inc ecx
  mov [fn+1], cl                ; next call returns the new count
  cmp ecx, 50
  jb again
  jmp done
fn:
  mov eax, 0
  ret
done:`,
    },
    (o) => assert.equal(o.regs[EBX], (49 * 50) / 2),
  );
});

test("self-modifying code: code written through another linear alias of the same frame", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "write through ALIAS_B, run at ALIAS_A",
      body: `
  xor ebx, ebx
  xor ecx, ecx
l:
  mov byte [ALIAS_B], 0xb8      ; mov eax, ecx-value
  mov [ALIAS_B+1], ecx
  mov byte [ALIAS_B+5], 0xc3    ; ret
  call ALIAS_A
  add ebx, eax
  inc ecx
  cmp ecx, 40
  jb l`,
    },
    (o) => assert.equal(o.regs[EBX], (39 * 40) / 2),
  );
});

test("self-modifying code: a tight loop rewriting its own next instruction 20000 times", (t) => {
  if (skip) return t.skip(skip);
  const bt = agree(
    t,
    {
      name: "tight rewrite loop",
      body: `
  xor ebx, ebx
  mov ecx, 20000
l:
  mov [imm+1], ecx
imm:
  mov eax, 0
  add ebx, eax
  dec ecx
  jnz l`,
    },
    (o) => assert.equal(o.regs[EBX], (20000 * 20001) / 2),
  );
  if (bt.bt !== undefined) t.diagnostic(`code cache after the loop: ${bt.bt.cacheBlocks} blocks`);
});

test("REP MOVS/STOS/CMPS/SCAS cut by a page fault mid-way restart with the remaining count", (t) => {
  if (skip) return t.skip(skip);
  const page = (k: number) => M.PF_LO + 0x1000 * k;
  agree(
    t,
    {
      name: "rep string faults",
      body: `
  cld
  mov esi, DATA
  mov edi, PF_LO-8              ; two dwords, then #PF on PF_LO
  mov ecx, 16
  rep movsd
  mov esi, PF_LO+0x3000-12      ; #PF on the first read, then again crossing into PF page 3
  mov edi, DATA+0x200
  mov ecx, 8
  rep movsd
  mov edi, PF_LO+0x5000-3       ; STOSB crossing into PF page 5
  mov al, 0x5a
  mov ecx, 9
  rep stosb
  std
  mov edi, PF_LO+0x7002         ; backward STOSW from PF page 7 into page 6
  mov ax, 0x1234
  mov ecx, 5
  rep stosw
  cld
  mov esi, PF_LO+0x9000-5       ; REPE CMPSB over zeros, crossing into PF page 9
  mov edi, DATA+0x400
  mov ecx, 40
  repe cmpsb
  mov edi, PF_LO+0xb000-5       ; REPNE SCASB finds the 1 written at PF page 11 + 10
  mov al, 1
  mov ecx, 100
  repne scasb
  pushfd
  pop edx
  and edx, 0x8d5`,
      setup: (m) => {
        for (let i = 0; i < 64; i++) m.writeU32(M.DATA + 4 * i, (0x01010101 * i) >>> 0);
        m.write(page(11) + 10, Uint8Array.of(1));
      },
    },
    (o) => {
      const pf = vectors(o).filter((v) => v === 14).length;
      assert.ok(pf >= 6, `${pf} page faults in the REP instructions`);
      assert.equal(o.regs[ECX], 100 - 16, "SCASB stopped after the 1 at offset 10 of the page");
    },
  );
});

test("an interrupt arriving inside a hot loop of chained blocks is taken within a slice", (t) => {
  if (skip) return t.skip(skip);
  const at = [5003, 5004, 23_456];
  agree(
    t,
    {
      name: "interrupt in a hot loop",
      interruptsAt: at,
      body: `
  sti
  xor eax, eax
l:
  inc eax
  add ebx, eax
  jmp l2                        ; two blocks chained into a loop
l2:
  rol ebx, 3
  cmp dword [LOG_COUNT], 3
  jb l
  cli`,
    },
    (o) => {
      assert.equal(o.acknowledgedAt.length, 3);
      o.acknowledgedAt.forEach((n, i) => {
        assert.ok(n >= at[i]! && n - at[i]! <= 2048 + 64, `interrupt ${i} raised at ${at[i]}, taken at ${n}`);
      });
    },
  );
});

test("an interrupt wakes HLT and a REP loop is interrupted between instructions", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "interrupt while halted and between REPs",
      interruptsAt: [100, 3000],
      body: `
  sti
  hlt                           ; woken by the first interrupt
w:
  mov esi, DATA
  mov edi, DATA+0x800
  mov ecx, 256
  rep movsd
  inc edx
  cmp dword [LOG_COUNT], 2
  jb w
  cli`,
    },
    (o) => assert.equal(o.acknowledgedAt.length, 2),
  );
});

test("jumping into the middle of an instruction runs the bytes there as another instruction", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "into the middle of an instruction",
      body: `
  xor ecx, ecx
  xor ebx, ebx
l:
  call mid                      ; mov eax, 0xc340c031; ret
  add ebx, eax
  call mid+1                    ; xor eax, eax; inc eax; ret
  add ebx, eax
  inc ecx
  cmp ecx, 10
  jb l
  jmp done
mid:
  db 0xb8, 0x31, 0xc0, 0x40, 0xc3
  ret
done:`,
    },
    (o) => assert.equal(o.regs[EBX], (10 * (0xc340c031 + 1)) >>> 0),
  );
});

test("executing from an unmapped page, across a page end into one, and from MMIO", (t) => {
  if (skip) return t.skip(skip);
  const edge = M.UNMAPPED - 8; // 6 one-byte instructions, then MOV EAX, imm32 across into UNMAPPED
  agree(
    t,
    {
      name: "fetch faults and MMIO code",
      mmioCode: Uint8Array.of(0xb8, 0x78, 0x56, 0x34, 0x12, 0x43, 0xc3), // mov eax, 0x12345678; inc ebx; ret
      body: `
  mov dword [RECOVER], back1
  call UNMAPPED                 ; #PF on the fetch, EIP = UNMAPPED
back1:
  mov esp, STACK0
  mov dword [RECOVER], back2
  call UNMAPPED-8               ; INC EBX x6 run, then the fetch of the MOV faults
back2:
  mov esp, STACK0
  call MMIO_CODE                ; code from a device
  mov [DATA], eax`,
      setup: (m) => m.write(edge, Uint8Array.of(0x43, 0x43, 0x43, 0x43, 0x43, 0x43, 0xb8, 0x11)),
    },
    (o) => {
      const log = exceptionLog(o);
      assert.deepEqual(
        log.map((e) => [e.vector, e.cr2 >>> 0, e.eip >>> 0]),
        [
          [14, M.UNMAPPED, M.UNMAPPED],
          [14, M.UNMAPPED, edge + 6],
        ],
      );
      assert.equal(o.regs[EAX], 0x12345678);
      assert.equal(o.regs[EBX], 7);
    },
  );
});

test("instructions straddling a page boundary, in a loop", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "straddling instructions",
      body: `
  xor ecx, ecx
l:
  jmp near straddle
  times (0x1000 - (($-$$+BOOT) & 0xfff)) - 3 db 0x90
straddle:
  mov eax, 0x11223344           ; 2 bytes before the page end, 3 after
  add ebx, eax
  inc ecx
  cmp ecx, 100
  jb l`,
    },
    (o) => assert.equal(o.regs[EBX], (100 * 0x11223344) >>> 0),
  );
});

test("real-mode code (CR0.PE cleared) and a 16-bit protected-mode segment agree", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "real mode",
      paging: false,
      body: `
  jmp 0x18:pm16
BITS 16
pm16:
  mov ax, 0x20
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov eax, cr0
  and eax, ~1
  mov cr0, eax
  jmp 0:rm
rm:
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x6000
  lidt [rm_idtr]
  mov word [0x40*4], rm_handler
  mov word [0x40*4+2], 0
  xor dx, dx
  xor bx, bx
  mov cx, 300
.l:
  add ax, cx
  adc dx, 0
  int 0x40
  rcl si, 1
  loop .l
  mov si, 0x6800
  mov di, 0x6900
  mov cx, 64
  rep movsb
  pushf
  pop di
  mov eax, cr0
  or eax, 1
  mov cr0, eax
  jmp dword 0x08:back32
rm_handler:
  inc bx
  iret
rm_idtr: dw 0x3ff
         dd 0
BITS 32
back32:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov esp, STACK0
  lidt [idtr]`,
    },
    (o) => {
      assert.equal(o.regs[EBX]! & 0xffff, 300);
      assert.equal(o.regs[ECX]! & 0xffff, 0);
    },
  );
});

test("executing from MMIO nothing claims (all ones: FF FF) stops the VM with the bytes and address on both", (t) => {
  if (skip) return t.skip(skip);
  agree(
    t,
    {
      name: "unclaimed MMIO code",
      body: `
  mov ebx, 3
  call MMIO_NONE`,
    },
    (o) => assert.equal(o.eip, M.MMIO_NONE),
    // FF /7 is reserved (SDM vol. 2 table A-6); the interpreter stops as for any opcode it lacks.
    `unimplemented instruction at 00${M.MMIO_NONE.toString(16)}`,
  );
});

test("the harness reports a register, flag, memory, instruction-count and stop difference", (t) => {
  if (skip) return t.skip(skip);
  const c: DiffCase = { name: "harness self-check", body: "  mov eax, 7\n  mov [DATA], eax" };
  const a = runCase(c, "interp");
  const b = runCase(c, "interp");
  assert.deepEqual(compareOutcomes(a, b), []);
  const regs = [...b.regs];
  regs[EAX] = 8;
  const memory = b.memory.slice();
  memory[M.DATA + 4] = 1;
  const bad: Outcome = {
    ...b,
    regs,
    memory,
    eflags: b.eflags ^ 1,
    instructions: b.instructions + 1,
    stops: [...b.stops, "budget@1"],
  };
  const d = compareOutcomes(a, bad).join("\n");
  for (const what of ["eax", "eflags", "memory at 0x00500004", "instructions", "stops differ"])
    assert.match(d, new RegExp(what));
  assert.deepEqual(compareOutcomes(a, { ...b, eflags: b.eflags ^ 1 }, 1), [], "masked CF is not compared");
});
