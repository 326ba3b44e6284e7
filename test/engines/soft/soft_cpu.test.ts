/**
 * Unit tests of the soft CPU core by instruction group: each test assembles a few instructions
 * (nasm, from the source beside the test), runs them from a flat protected-mode entry and checks
 * registers, flags, memory or the exception taken. Exceptions land in stubs that record the
 * vector and error code (soft_cpu_harness.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { asm, CODE, haveNasm, isEnd, KERNEL_CS, machine, USER_STACK_TOP } from "./soft_cpu_harness.js";

const EAX = 0;
const ECX = 1;
const EDX = 2;
const EBX = 3;
const ESP = 4;
const ESI = 6;
const EDI = 7;
const CF = 1;
const ZF = 0x40;
const SF = 0x80;
const OF = 0x800;

function runAsm(t: { skip(m: string): void }, source: string, opts: { cpl3?: boolean } = {}) {
  if (!haveNasm()) {
    t.skip("nasm is not installed (scripts/setup-host.sh installs it)");
    return undefined;
  }
  const m = machine(asm(source), opts);
  const stop = m.run();
  return { m, stop, regs: m.soft.cpu.regs, flags: m.soft.cpu.getEflags() };
}

test("soft cpu: add/sub/adc/sbb set CF, OF, ZF, SF as the SDM defines", (t) => {
  const r = runAsm(
    t,
    `mov eax, 0x7fffffff
     add eax, 1          ; OF=1 SF=1 CF=0
     pushfd
     mov ebx, 0
     sub ebx, 1          ; CF=1 (borrow) SF=1
     pushfd
     stc
     mov ecx, 0xffffffff
     adc ecx, 0          ; ecx=0, CF=1, ZF=1
     pushfd
     stc
     mov edx, 5
     sbb edx, 2          ; edx=2
     pop esi
     pop edi
     pop ebp
     hlt`,
  );
  if (r === undefined) return;
  assert.ok(isEnd(r.stop), JSON.stringify(r.stop));
  assert.equal(r.regs[EAX], 0x80000000 | 0);
  const f1 = r.regs[5]!;
  assert.equal(f1 & (OF | SF | CF | ZF), OF | SF);
  const f2 = r.regs[EDI]!;
  assert.equal(f2 & (CF | SF | ZF), CF | SF);
  const f3 = r.regs[ESI]!;
  assert.equal(f3 & (CF | ZF), CF | ZF);
  assert.equal(r.regs[ECX], 0);
  assert.equal(r.regs[EDX], 2);
});

test("soft cpu: inc/dec preserve CF; logic ops clear CF and OF", (t) => {
  const r = runAsm(
    t,
    `stc
     mov eax, -1
     inc eax             ; ZF=1, CF still 1
     setc bl
     setz bh
     or eax, 0x80        ; CF=0
     setc cl
     sets ch
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[EBX]! & 0xffff, 0x0101);
  assert.equal(r.regs[ECX]! & 0xffff, 0x0000);
});

test("soft cpu: mul, imul (all forms), div and idiv", (t) => {
  const r = runAsm(
    t,
    `mov eax, 0x12345678
     mov ecx, 0x9abcdef0
     mul ecx             ; edx:eax = 0x0b00ea4e_242d2080
     mov esi, edx
     mov edi, eax
     mov eax, -7
     mov ecx, 3
     imul ecx            ; edx:eax = -21
     mov ebx, eax
     imul ebp, ecx, -5   ; -15
     mov eax, 1000000007
     xor edx, edx
     mov ecx, 10
     div ecx             ; eax = 100000000, edx = 7
     push eax
     push edx
     mov eax, -100
     cdq
     mov ecx, 7
     idiv ecx            ; eax=-14 edx=-2
     pop ecx
     pop edx
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[ESI]! >>> 0, 0x0b00ea4e);
  assert.equal(r.regs[EDI]! >>> 0, 0x242d2080);
  assert.equal(r.regs[EBX], -21);
  assert.equal(r.regs[5], -15);
  assert.equal(r.regs[EDX], 100000000);
  assert.equal(r.regs[ECX], 7);
  assert.equal(r.regs[EAX], -14);
});

test("soft cpu: divide by zero raises #DE with EIP at the faulting instruction", (t) => {
  const r = runAsm(
    t,
    `xor ecx, ecx
     mov eax, 1
     div ecx
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.m.vector(), 0);
  // The stub was entered from the DIV: its return EIP on the stack is the DIV itself.
  assert.equal(r.m.memory.readU32(0x9000 - 12), CODE + 7);
});

test("soft cpu: shifts, rotates, shld/shrd", (t) => {
  const r = runAsm(
    t,
    `mov eax, 0x80000001
     shl eax, 1          ; eax=2, CF=1
     setc bl
     mov ecx, 0xf0000000
     sar ecx, 4          ; 0xff000000
     mov edx, 0x12345678
     rol edx, 8          ; 0x34567812
     mov esi, 0x11112222
     mov edi, 0x33334444
     shld esi, edi, 16   ; 0x22223333
     mov ebp, 0x11112222
     shrd ebp, edi, 8    ; 0x44111122
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[EAX], 2);
  assert.equal(r.regs[EBX]! & 0xff, 1);
  assert.equal(r.regs[ECX]! >>> 0, 0xff000000);
  assert.equal(r.regs[EDX]! >>> 0, 0x34567812);
  assert.equal(r.regs[ESI]! >>> 0, 0x22223333);
  assert.equal(r.regs[5]! >>> 0, 0x44111122);
});

test("soft cpu: bit operations, bsf/bsr, bswap, cmpxchg, xadd, cmpxchg8b", (t) => {
  const r = runAsm(
    t,
    `mov eax, 0x10
     bts eax, 0          ; CF=0, eax=0x11
     bt eax, 4
     setc bl
     bsr ecx, eax        ; 4
     bsf edx, eax        ; 0
     mov esi, 0x11223344
     bswap esi
     mov dword [0x4000], 5
     mov eax, 5
     mov edi, 9
     cmpxchg [0x4000], edi   ; equal: [0x4000]=9, ZF=1
     setz bh
     mov ebp, 3
     xadd [0x4000], ebp      ; [0x4000]=12, ebp=9
     mov dword [0x4010], 1
     mov dword [0x4014], 2
     push ebx
     push ecx
     mov edx, 2
     mov eax, 1
     mov ecx, 0xcc
     mov ebx, 0xbb
     cmpxchg8b [0x4010]
     pop ecx
     pop ebx
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[EBX]! & 0xffff, 0x0101);
  assert.equal(r.regs[ECX], 4);
  assert.equal(r.regs[ESI]! >>> 0, 0x44332211);
  assert.equal(r.m.memory.readU32(0x4000), 12);
  assert.equal(r.regs[5], 9);
  assert.equal(r.m.memory.readU32(0x4010), 0xbb);
  assert.equal(r.m.memory.readU32(0x4014), 0xcc);
});

test("soft cpu: rep movsb, rep stosd, repne scasb, cmov and setcc", (t) => {
  const r = runAsm(
    t,
    `cld
     mov edi, 0x5000
     mov eax, 0xdeadbeef
     mov ecx, 1000       ; crosses a page boundary
     rep stosd
     mov esi, 0x5000
     mov edi, 0x7000
     mov ecx, 4001
     rep movsb
     mov byte [0x6000], 0
     mov dword [0x6001], 0x00636261  ; "abc\\0"
     mov edi, 0x6001
     xor eax, eax
     mov ecx, -1
     repne scasb
     not ecx
     dec ecx             ; strlen = 3
     mov edx, 1
     cmp ecx, 3
     mov ebx, 7
     cmove edx, ebx
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.m.memory.readU32(0x5000 + 999 * 4), 0xdeadbeef);
  assert.equal(r.m.memory.readU32(0x5000 + 1000 * 4), 0);
  assert.equal(r.m.memory.readU8(0x7000 + 4000), r.m.memory.readU8(0x5000 + 4000));
  assert.equal(r.m.memory.readU32(0x7000 + 3996), 0xdeadbeef);
  assert.equal(r.regs[ECX], 3);
  assert.equal(r.regs[EDX], 7);
});

test("soft cpu: paging with 4 KiB and 4 MiB pages, #PF error code and CR2", (t) => {
  // Page directory at 0x10000: PDE 0 -> page table at 0x11000 (identity for 0-4 MiB, user, rw),
  // PDE 1 -> 4 MiB page at physical 0 (PSE). Linear 0x400000+0x4000 aliases physical 0x4000.
  // The page at 0x6000 is made read-only for ring 0 with CR0.WP set: a write faults with code 3.
  const r = runAsm(
    t,
    `mov edi, 0x11000
     mov eax, 0x7        ; present, rw, user
     mov ecx, 1024
  fill:
     stosd
     add eax, 0x1000
     loop fill
     mov dword [0x11000 + 6*4], 0x6005   ; present, user, read-only
     mov dword [0x10000], 0x11007
     mov dword [0x10004], 0x87           ; 4 MiB page, present, rw
     mov eax, cr4
     or eax, 0x10        ; PSE
     mov cr4, eax
     mov eax, 0x10000
     mov cr3, eax
     mov eax, cr0
     or eax, 0x80010000  ; PG | WP
     mov cr0, eax
     mov dword [0x4000], 0x1234
     mov ebx, [0x404000]             ; through the 4 MiB page
     mov dword [0x6000], 1           ; #PF: present, write, supervisor -> error code 3
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[EBX], 0x1234);
  assert.equal(r.m.vector(), 14);
  assert.equal(r.m.errorCode(), 3);
  assert.equal(r.m.soft.cpu.cr2, 0x6000);
  // Accessed and dirty bits were set in the PTE of the written page.
  assert.equal(r.m.memory.readU32(0x11000 + 4 * 4) & 0x60, 0x60);
});

test("soft cpu: CLI at CPL 3 raises #GP(0)", (t) => {
  const r = runAsm(t, "cli\nhlt", { cpl3: true });
  if (r === undefined) return;
  assert.equal(r.m.vector(), 13);
  assert.equal(r.m.errorCode(), 0);
});

test("soft cpu: INT from ring 3 switches to the TSS ring-0 stack and pushes SS:ESP", (t) => {
  const r = runAsm(t, "mov eax, 1\nint 3\nhlt", { cpl3: true });
  if (r === undefined) return;
  assert.equal(r.m.vector(), 3);
  const c = r.m.soft.cpu;
  assert.equal(c.cpl, 0);
  // Ring-0 stack (TSS.ESP0 = 0x9000): EIP, CS, EFLAGS, ESP, SS.
  assert.equal(r.m.memory.readU32(0x9000 - 4), 0x23);
  assert.equal(r.m.memory.readU32(0x9000 - 8), USER_STACK_TOP);
  assert.equal(r.m.memory.readU32(0x9000 - 16), 0x1b);
  assert.equal(r.regs[ESP], 0x9000 - 20);
});

test("soft cpu: CPUID advertises the implemented features only", (t) => {
  const r = runAsm(t, "mov eax, 1\ncpuid\nhlt");
  if (r === undefined) return;
  const d = r.regs[EDX]!;
  for (const bit of [0, 3, 4, 5, 6, 8, 11, 13, 15]) assert.ok(d & (1 << bit), `bit ${bit}`);
  for (const bit of [12, 23, 25, 26]) assert.equal(d & (1 << bit), 0, `bit ${bit} (MTRR/MMX/SSE)`);
});

test("soft cpu: an unimplemented instruction stops with its bytes, address and mode", () => {
  // 0f 0f: 3DNow! escape, not implemented.
  const m = machine([0x90, 0x0f, 0x0f, 0xc0, 0x9e]);
  const stop = m.run();
  assert.equal(stop.kind, "unimplemented");
  if (stop.kind !== "unimplemented") return;
  assert.equal(stop.address, CODE + 1);
  assert.deepEqual(stop.bytes.slice(0, 2), [0x0f, 0x0f]);
  assert.match(stop.mode, /protected/);
});

test("soft cpu: a fault with a broken IDT ends in a triple-fault shutdown report", () => {
  const m = machine([0x0f, 0x01, 0x1d, 0x00, 0x00, 0x00, 0x00 /* lidt [0] */, 0x0f, 0x0b /* ud2 */]);
  m.memory.fill(0, 8, 0); // limit 0 base 0: every vector is outside the IDT
  const stop = m.run();
  assert.equal(stop.kind, "shutdown");
  if (stop.kind !== "shutdown") return;
  assert.match(stop.reason, /triple fault/);
  assert.match(stop.report, /EIP=/);
});

test("soft cpu: self-modifying code is re-decoded after a write to its page", (t) => {
  const r = runAsm(
    t,
    `mov ecx, 2
  again:
     mov eax, 1          ; b8 01 00 00 00: the immediate is patched below
     mov byte [again + 1], 5
     loop again
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[EAX], 5);
});

test("soft cpu: a far call from ring 3 through a call gate switches to the ring-0 stack", (t) => {
  if (!haveNasm()) {
    t.skip("nasm is not installed");
    return;
  }
  const code = asm(
    `call 0x33:0          ; GDT entry 6: a DPL-3 call gate to ring 0
  ret_here:
     hlt
     times 0x100-($-$$) db 0
  target:               ; CODE + 0x100, ring 0
     mov esi, [esp]      ; return EIP
     mov edi, [esp+4]    ; caller CS
     mov ebp, cs
     mov ebx, [esp+8]    ; caller ESP
     hlt`,
  );
  const target = CODE + 0x100;
  const gate: [number, number] = [
    ((KERNEL_CS << 16) | (target & 0xffff)) >>> 0,
    ((target & 0xffff0000) | 0xec00) >>> 0,
  ];
  const m = machine(code, { cpl3: true, gdtExtra: [gate] });
  const stop = m.run();
  assert.equal(stop.kind, "shutdown");
  const r = m.soft.cpu.regs;
  assert.equal(r[ESI], CODE + 7);
  assert.equal(r[EDI], 0x1b);
  assert.equal(r[5], KERNEL_CS);
  assert.equal(r[EBX], USER_STACK_TOP);
  assert.equal(r[ESP], 0x9000 - 16);
});

test("soft cpu: EFLAGS.TF raises a single-step #DB after the next instruction", (t) => {
  const r = runAsm(
    t,
    `pushfd
     or dword [esp], 0x100
     popfd               ; TF=1: the trap comes after the next instruction
     mov eax, 42
     mov ebx, 43
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.m.vector(), 1);
  assert.equal(r.regs[EAX], 42);
  assert.notEqual(r.regs[EBX], 43);
});

test("soft cpu: PAE paging with 8-byte entries, a 2 MiB page and a #PF on a not-present PTE", (t) => {
  // PDPT at 0x10000 (entry 0 -> PD at 0x11000); PD entry 0 -> PT at 0x12000 (identity 0-2 MiB,
  // except page 0x5000 not present), PD entry 1 -> 2 MiB page at physical 0 (alias of 0-2 MiB).
  const r = runAsm(
    t,
    `mov edi, 0x12000
     mov eax, 0x3
     mov ecx, 512
  fill:
     mov [edi], eax
     mov dword [edi+4], 0
     add edi, 8
     add eax, 0x1000
     loop fill
     mov dword [0x12000 + 5*8], 0        ; page 0x5000 not present
     mov dword [0x10000], 0x11001        ; PDPTE 0: present
     mov dword [0x11000], 0x12003        ; PDE 0 -> page table
     mov dword [0x11008], 0x83           ; PDE 1: 2 MiB page at 0
     mov eax, cr4
     or eax, 0x20        ; PAE
     mov cr4, eax
     mov eax, 0x10000
     mov cr3, eax
     mov eax, cr0
     or eax, 0x80000000
     mov cr0, eax
     mov dword [0x4000], 0x5678
     mov ebx, [0x204000]                 ; through the 2 MiB page
     mov eax, [0x5004]                   ; #PF: not present, read, supervisor -> code 0
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[EBX], 0x5678);
  assert.equal(r.m.vector(), 14);
  assert.equal(r.m.errorCode(), 0);
  assert.equal(r.m.soft.cpu.cr2, 0x5004);
  // The 2 MiB PDE got its accessed bit.
  assert.equal(r.m.memory.readU32(0x11008) & 0x20, 0x20);
});

test("soft cpu: with paging off, an address above RAM (and above 2 GiB) reads the bus, not RAM", (t) => {
  const r = runAsm(
    t,
    `mov eax, [0xc1000000]
     mov ebx, [0x00400000]   ; just past the 4 MiB of RAM
     hlt`,
  );
  if (r === undefined) return;
  assert.equal(r.regs[EAX], -1);
  assert.equal(r.regs[EBX], -1);
});
