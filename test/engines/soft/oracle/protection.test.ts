/**
 * Protection and paging paths of the software CPU against the SDM (vol. 3 ch. 4-6): exception
 * vectors, error codes, CR2 and the faulting EIP, accessed/dirty bits, PSE, INVLPG, segment and
 * privilege checks, call gates, precise faults in REP strings, double fault. Soft-only: on this
 * kind of host KVM (PVM) emulates kernel mode and refuses 32-bit paging, so the hardware cannot
 * be the oracle here; the expected values come from the manual.
 *
 * Each body runs in ring 0 (kernel_runner.ts); MARK(n) records a label's address at MARKS+4n so
 * the test can compare it with the logged faulting EIP.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ACCESSED, DIRTY, identityPaging, K, P, PS, pteAddress, RW, runKernel, US } from "./kernel_runner.js";
import { MmioBus } from "../../../../src/bus/mmio_bus.js";
import { PortBus } from "../../../../src/bus/port_bus.js";
import { SoftCpu } from "../../../../src/engines/soft/soft_cpu.js";
import { GuestMemory } from "../../../../src/memory/guest_memory.js";
import { assemble, nasmUnavailable } from "./nasm.js";

const MARKS = 0x6400;
const mark = (n: number, label: string) => `mov dword [0x${(MARKS + 4 * n).toString(16)}], ${label}`;
const skip = nasmUnavailable() ?? false;

type Run = ReturnType<typeof runKernel>;
const marks = (r: Run, n: number) => r.memory.readU32(MARKS + 4 * n);

function assertEnded(r: Run): void {
  assert.equal(r.stop.kind, "halted", JSON.stringify(r.stop).slice(0, 2000));
}

/** Makes the pages of the test blob and the given pages user-accessible. */
function userPages(m: Parameters<typeof identityPaging>[0], pages: number[]): void {
  for (const a of [0x6000, 0x7000, 0x8000, 0x9000, ...pages]) {
    m.writeU32(pteAddress(a), m.readU32(pteAddress(a)) | US);
  }
}

describe("soft CPU paging (SDM vol. 3 ch. 4)", { skip }, () => {
  it("a not-present page faults with error 0, CR2 = the address, EIP = the instruction", () => {
    const r = runKernel(
      [
        "PAGING_ON",
        mark(0, "f1"),
        "EXPECT after1",
        "f1: mov eax, [0x400123]",
        "after1:",
        "mov ebx, 0x1234",
      ].join("\n"),
      (m) => {
        identityPaging(m);
        m.writeU32(pteAddress(0x400000), 0x400000); // not present
      },
    );
    assertEnded(r);
    assert.deepEqual(r.log, [{ vector: 14, errorCode: 0, cr2: 0x400123, eip: marks(r, 0) }]);
    assert.equal(r.cpu.regs[3], 0x1234);
    assert.equal(r.cpu.cr2, 0x400123);
  });

  it("a supervisor write to a read-only page faults with CR0.WP=1 (error 3) and not with WP=0", () => {
    const r = runKernel(
      [
        "PAGING_ON",
        mark(0, "f1"),
        "EXPECT after1",
        "f1: mov dword [0x400010], 7",
        "after1:",
        "mov eax, cr0",
        "and eax, ~0x10000",
        "mov cr0, eax",
        "mov dword [0x400014], 9",
      ].join("\n"),
      (m) => {
        identityPaging(m);
        m.writeU32(pteAddress(0x400000), 0x400000 | P);
      },
    );
    assertEnded(r);
    assert.deepEqual(r.log, [{ vector: 14, errorCode: 3, cr2: 0x400010, eip: marks(r, 0) }]);
    assert.equal(r.memory.readU32(0x400010), 0);
    assert.equal(r.memory.readU32(0x400014), 9);
  });

  it("ring-3 accesses fault with U/S set: read supervisor 5, write read-only 7, write not-present 6", () => {
    const r = runKernel(
      [
        "PAGING_ON",
        "TO_RING3 user, 0x401ff0",
        "user:",
        mark(0, "f1"),
        "EXPECT a1",
        "f1: mov eax, [0x402000]",
        "a1:",
        mark(1, "f2"),
        "EXPECT a2",
        "f2: mov dword [0x403000], 1",
        "a2:",
        mark(2, "f3"),
        "EXPECT a3",
        "f3: mov dword [0x404000], 1",
        "a3:",
        mark(3, "f4"),
        "EXPECT a4",
        "mov esp, 0x405004",
        "f4: push eax",
        "a4:",
        "mov esp, 0x401ff0",
        "mov ebx, [0x403000]",
        "EXPECT_RESUME back",
        "hlt",
        "back:",
      ].join("\n"),
      (m) => {
        identityPaging(m);
        userPages(m, [0x401000]);
        m.writeU32(pteAddress(0x401000), 0x401000 | P | RW | US); // stack
        m.writeU32(pteAddress(0x402000), 0x402000 | P | RW); // supervisor
        m.writeU32(pteAddress(0x403000), 0x403000 | P | US); // user read-only
        m.writeU32(pteAddress(0x404000), 0x404000 | US); // not present
        m.writeU32(pteAddress(0x405000), 0x405000 | US); // not present (stack)
        m.writeU32(0x403000, 0xabcd);
      },
    );
    assertEnded(r);
    assert.deepEqual(r.log, [
      { vector: 14, errorCode: 5, cr2: 0x402000, eip: marks(r, 0) },
      { vector: 14, errorCode: 7, cr2: 0x403000, eip: marks(r, 1) },
      { vector: 14, errorCode: 6, cr2: 0x404000, eip: marks(r, 2) },
      { vector: 14, errorCode: 6, cr2: 0x405000, eip: marks(r, 3) },
      { vector: 13, errorCode: 0, cr2: 0x405000, eip: r.log[4]?.eip ?? -1 },
    ]);
    assert.equal(r.cpu.regs[3], 0xabcd, "the user read of the read-only page succeeded");
  });

  it("sets accessed on a read, dirty on a write, and accessed in the PDE", () => {
    const r = runKernel(["PAGING_ON", "mov eax, [0x400000]", "mov dword [0x401000], 5"].join("\n"), (m) => {
      identityPaging(m);
    });
    assertEnded(r);
    const pte0 = r.memory.readU32(pteAddress(0x400000));
    const pte1 = r.memory.readU32(pteAddress(0x401000));
    const pte2 = r.memory.readU32(pteAddress(0x402000));
    assert.equal(pte0 & (ACCESSED | DIRTY), ACCESSED);
    assert.equal(pte1 & (ACCESSED | DIRTY), ACCESSED | DIRTY);
    assert.equal(pte2 & (ACCESSED | DIRTY), 0);
    assert.equal(r.memory.readU32(K.PD + 4) & ACCESSED, ACCESSED);
  });

  it("maps a 4 MiB page with CR4.PSE and sets its dirty bit", () => {
    const r = runKernel(
      [
        "mov eax, cr4",
        "or eax, 0x10",
        "mov cr4, eax",
        "PAGING_ON",
        "mov eax, [0x800010]",
        "mov dword [0xbffff0], 0x55",
      ].join("\n"),
      (m) => {
        identityPaging(m);
        m.writeU32(K.PD + 8, 0x400000 | PS | P | RW);
        m.writeU32(0x400010, 0xfeedf00d);
      },
    );
    assertEnded(r);
    assert.equal(r.cpu.regs[0]! >>> 0, 0xfeedf00d);
    assert.equal(r.memory.readU32(0x7ffff0), 0x55);
    assert.equal(r.memory.readU32(K.PD + 8) & (ACCESSED | DIRTY), ACCESSED | DIRTY);
  });

  it("INVLPG makes a changed PTE visible; a CR3 load does too", () => {
    const r = runKernel(
      [
        "PAGING_ON",
        "mov eax, [0x403000]",
        `mov dword [0x${pteAddress(0x403000).toString(16)}], 0x405003`,
        "invlpg [0x403000]",
        "mov ebx, [0x403000]",
        `mov dword [0x${pteAddress(0x403000).toString(16)}], 0x404003`,
        "mov ecx, cr3",
        "mov cr3, ecx",
        "mov ecx, [0x403000]",
      ].join("\n"),
      (m) => {
        identityPaging(m);
        m.writeU32(pteAddress(0x403000), 0x404000 | P | RW);
        m.writeU32(0x404000, 0xaaaa);
        m.writeU32(0x405000, 0xbbbb);
      },
    );
    assertEnded(r);
    assert.deepEqual([r.cpu.regs[0], r.cpu.regs[3], r.cpu.regs[1]], [0xaaaa, 0xbbbb, 0xaaaa]);
  });

  it("a #PF in the middle of REP MOVSB leaves ECX/ESI/EDI at the faulting iteration", () => {
    const r = runKernel(
      [
        "PAGING_ON",
        "mov esi, 0x400ff8",
        "mov edi, 0x402ffc",
        "mov ecx, 16",
        mark(0, "f1"),
        "EXPECT after",
        "f1: rep movsb",
        "after:",
      ].join("\n"),
      (m) => {
        identityPaging(m);
        m.writeU32(pteAddress(0x403000), 0x403000);
        m.write(0x400ff8, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]));
      },
    );
    assertEnded(r);
    assert.deepEqual(r.log, [{ vector: 14, errorCode: 2, cr2: 0x403000, eip: marks(r, 0) }]);
    assert.deepEqual([r.cpu.regs[1], r.cpu.regs[6], r.cpu.regs[7]], [12, 0x400ffc, 0x403000]);
    assert.deepEqual([...r.memory.slice(0x402ffc, 4)], [1, 2, 3, 4]);
  });

  it("a #PF whose IDT gate is not present becomes a double fault (error 0)", () => {
    const r = runKernel(
      [
        `and dword [0x${(K.IDT + 14 * 8 + 4).toString(16)}], ~0x8000`,
        "PAGING_ON",
        mark(0, "f1"),
        "EXPECT after",
        "f1: mov eax, [0x400000]",
        "after:",
      ].join("\n"),
      (m) => {
        identityPaging(m);
        m.writeU32(pteAddress(0x400000), 0);
      },
    );
    assertEnded(r);
    assert.equal(r.log.length, 1);
    assert.equal(r.log[0]!.vector, 8);
    assert.equal(r.log[0]!.errorCode, 0);
    assert.equal(r.log[0]!.cr2, 0x400000);
  });
});

describe("soft CPU segmentation and privilege (SDM vol. 3 ch. 5-6)", { skip }, () => {
  it("checks data-segment limits: #GP(0) beyond the limit", () => {
    const r = runKernel(
      [
        "mov ax, 0x30",
        "mov es, ax",
        "mov eax, [es:0xffc]",
        mark(0, "f1"),
        "EXPECT a1",
        "f1: mov eax, [es:0x1000]",
        "a1:",
        mark(1, "f2"),
        "EXPECT a2",
        "f2: mov eax, [es:0xffe]",
        "a2:",
      ].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.errorCode, e.eip]),
      [
        [13, 0, marks(r, 0)],
        [13, 0, marks(r, 1)],
      ],
    );
  });

  it("checks selector loads: limit #GP(sel), not present #NP(sel), SS rules #GP", () => {
    const r = runKernel(
      [
        mark(0, "f1"),
        "EXPECT a1",
        "mov ax, 0x80",
        "f1: mov ds, ax",
        "a1:",
        mark(1, "f2"),
        "EXPECT a2",
        "mov ax, 0x38",
        "f2: mov ds, ax",
        "a2:",
        mark(2, "f3"),
        "EXPECT a3",
        "mov ax, 0x40",
        "f3: mov ss, ax",
        "a3:",
        mark(3, "f4"),
        "EXPECT a4",
        "xor ax, ax",
        "f4: mov ss, ax",
        "a4:",
        mark(4, "f5"),
        "EXPECT a5",
        "mov ax, 0x13",
        "f5: mov ss, ax",
        "a5:",
        "mov ax, 0x40",
        "mov fs, ax",
        "mov ebx, [fs:0x7000]",
      ].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.errorCode, e.eip]),
      [
        [13, 0x80, marks(r, 0)],
        [11, 0x38, marks(r, 1)],
        [13, 0x40, marks(r, 2)],
        [13, 0, marks(r, 3)],
        [13, 0x10, marks(r, 4)],
      ],
    );
    assert.equal(r.cpu.regs[3], r.memory.readU32(0x7000), "a readable code segment loads into FS and reads");
  });

  it("a memory access through a null data selector raises #GP(0)", () => {
    const r = runKernel(
      ["xor ax, ax", "mov gs, ax", mark(0, "f1"), "EXPECT a1", "f1: mov eax, [gs:0]", "a1:"].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.errorCode, e.eip]),
      [[13, 0, marks(r, 0)]],
    );
  });

  it("ring 3: privileged instructions, DPL checks and INT to a DPL-0 gate raise #GP", () => {
    const r = runKernel(
      [
        "TO_RING3 user, 0x1ff00",
        "user:",
        mark(0, "f1"),
        "EXPECT a1",
        "f1: cli",
        "a1:",
        mark(1, "f2"),
        "EXPECT a2",
        "f2: mov eax, cr0",
        "a2:",
        mark(2, "f3"),
        "EXPECT a3",
        "f3: in al, 0x60",
        "a3:",
        mark(3, "f4"),
        "EXPECT a4",
        "mov ax, 0x10",
        "f4: mov ds, ax",
        "a4:",
        mark(4, "f5"),
        "EXPECT a5",
        "f5: int 0x0d",
        "a5:",
        mark(5, "f6"),
        "EXPECT a6",
        "f6: lgdt [0x6000]",
        "a6:",
        "EXPECT_RESUME back",
        "hlt",
        "back:",
      ].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.errorCode, e.eip]),
      [
        [13, 0, marks(r, 0)],
        [13, 0, marks(r, 1)],
        [13, 0, marks(r, 2)],
        [13, 0x10, marks(r, 3)],
        [13, 0x0d * 8 + 2, marks(r, 4)],
        [13, 0, marks(r, 5)],
        [13, 0, r.log[6]?.eip ?? -1],
      ],
    );
  });

  it("a far call through a DPL-3 call gate enters ring 0 on the TSS stack and RETF returns", () => {
    const r = runKernel(
      [
        "TO_RING3 user, 0x1ff00",
        "user:",
        "call 0x48:0",
        "ret_here:",
        mark(6, "ret_here"),
        "mov ecx, cs",
        "mov edx, esp",
        "EXPECT_RESUME back",
        "hlt",
        "back:",
      ].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => e.vector),
      [13],
    );
    // The call gate ran gate_target in ring 0 (CS 0x08) on the TSS stack with the caller's
    // return address and CS pushed, and RETF went back to ring 3 and its stack.
    assert.equal(r.cpu.regs[6]! >>> 0, marks(r, 6), "return EIP pushed by the call gate");
    assert.equal(r.cpu.regs[7], 0x1b, "caller CS pushed by the call gate");
    assert.equal(r.cpu.regs[5], 0x08, "gate target ran in ring 0");
    assert.equal(r.cpu.regs[1], 0x1b, "back in ring 3");
    assert.equal(r.cpu.regs[2], 0x1ff00, "ring-3 stack restored");
  });

  it("raises #UD for UD2", () => {
    const r = runKernel([mark(0, "f1"), "EXPECT a1", "f1: ud2", "a1:"].join("\n"));
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.errorCode, e.eip]),
      [[6, 0, marks(r, 0)]],
    );
  });

  it("raises #UD for LOCK on a register operand", () => {
    const r = runKernel(
      [mark(1, "f2"), "EXPECT a2", "f2: db 0xf0, 0x01, 0xd8 ; lock add eax, ebx", "a2:"].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.errorCode, e.eip]),
      [[6, 0, marks(r, 1)]],
    );
  });
});

describe("soft CPU x87 availability checks (SDM vol. 3 2.5 CR0.EM/MP/TS, FXSAVE alignment)", { skip }, () => {
  it("CR0.TS makes x87 instructions raise #NM until CLTS; WAIT needs MP and TS", () => {
    const r = runKernel(
      [
        "mov eax, cr0",
        "or eax, 0x0a", // TS | MP
        "mov cr0, eax",
        mark(0, "f1"),
        "EXPECT a1",
        "f1: fld1",
        "a1:",
        mark(1, "f2"),
        "EXPECT a2",
        "f2: fwait",
        "a2:",
        "clts",
        "fld1",
        "fwait",
        "mov eax, cr0",
        "and eax, ~0x0a",
        "or eax, 0x04", // EM
        "mov cr0, eax",
        mark(2, "f3"),
        "EXPECT a3",
        "f3: fld1",
        "a3:",
        "fwait", // WAIT ignores EM
        "mov ebx, 0x55",
      ].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.eip]),
      [
        [7, marks(r, 0)],
        [7, marks(r, 1)],
        [7, marks(r, 2)],
      ],
    );
    assert.equal(r.cpu.regs[3], 0x55);
  });

  it("FXSAVE to an address that is not 16-byte aligned raises #GP(0)", () => {
    const r = runKernel(
      [mark(0, "f1"), "EXPECT a1", "f1: fxsave [0x30008]", "a1:", "fxsave [0x30010]"].join("\n"),
    );
    assertEnded(r);
    assert.deepEqual(
      r.log.map((e) => [e.vector, e.errorCode, e.eip]),
      [[13, 0, marks(r, 0)]],
    );
    assert.equal(r.memory.readU16(0x30010), 0x037f, "the aligned FXSAVE stored FCW");
  });
});

describe("soft CPU mode switch (SDM vol. 3 ch. 9.9)", { skip }, () => {
  it("goes from real mode to protected mode (LGDT, CR0.PE, far JMP) within one run", () => {
    const blob = assemble(
      [
        "BITS 16",
        "ORG 0x7000",
        "  cli",
        "  xor ax, ax",
        "  mov ds, ax",
        "  o32 lgdt [gdtr]",
        "  mov eax, cr0",
        "  or eax, 1",
        "  mov cr0, eax",
        "  jmp dword 0x08:pm",
        "BITS 32",
        "pm:",
        "  mov ax, 0x10",
        "  mov ds, ax",
        "  mov ss, ax",
        "  mov esp, 0x9000",
        "  push dword 0x12345678",
        "  pop ebx",
        "  sti",
        "  hlt",
        "gdtr: dw 23",
        "  dd gdt",
        "align 8",
        "gdt: dq 0, 0x00cf9a000000ffff, 0x00cf92000000ffff",
      ].join("\n"),
    );
    const memory = GuestMemory.shared([{ base: 0, size: 1 << 20 }]);
    const soft = new SoftCpu({
      memory,
      ports: new PortBus(),
      mmio: new MmioBus(),
      interrupts: { hasInterrupt: () => false, acknowledgeInterrupt: () => 0 },
      clock: { nowNs: () => 0 },
      tscHz: 1e9,
    });
    memory.write(0x7000, blob);
    soft.cpu.segSel[1] = 0;
    soft.cpu.segBase[1] = 0;
    soft.cpu.eip = 0x7000;
    const stop = soft.run(10_000);
    assert.equal(stop.kind, "halted", JSON.stringify(stop).slice(0, 1500));
    assert.equal(soft.cpu.regs[3], 0x12345678);
    assert.equal(soft.cpu.cr0 & 1, 1);
  });
});
