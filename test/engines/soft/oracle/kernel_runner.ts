/**
 * A ring-0 test machine for the protection and paging paths of the software CPU, which the KVM
 * oracle cannot run on this kind of host (PVM emulates kernel mode and refuses 32-bit paging):
 * these tests check the SDM's expected exceptions, error codes and CR2 directly.
 *
 * One NASM blob at 0x7000, entered in 32-bit protected mode: a bootstrap (GDT, IDT, TSS), the call-gate
 * target at 0x7180, 32 exception stubs at 0x7200 that log and recover, then the test body, which
 * runs in ring 0 and ends by halting.
 *
 * The exception log: LOG_COUNT (u32) then entries of 16 bytes at LOG: vector, error code, CR2,
 * faulting EIP. After logging, the handler resumes at [RECOVER] (same privilege: the exception
 * frame is returned through with EIP replaced) or, if RECOVER is 0, at [RESUME] in ring 0 on a
 * fresh ring-0 stack (leaving a ring-3 excursion), else it halts. Both are cleared when used;
 * general registers are preserved either way.
 *
 * GDT: 0x08 code0, 0x10 data0, 0x1b code3, 0x23 data3, 0x28 TSS, 0x30 data0 with a 4 KiB limit,
 * 0x38 not-present data, 0x40 code0 used as a (non-writable) data selector test, 0x48 ring-3
 * call gate to `gate_target` (DPL 3).
 * Paging: `identityPaging` writes a page directory at PD mapping 0-8 MiB with 4 KiB pages (PTs at
 * PT0), supervisor read/write; tests change entries, then load CR3 and set CR0.PG in the body.
 */
import { MmioBus } from "../../../../src/bus/mmio_bus.js";
import { PortBus } from "../../../../src/bus/port_bus.js";
import type { Cpu } from "../../../../src/engines/soft/cpu.js";
import { SoftCpu, type SoftStop } from "../../../../src/engines/soft/soft_cpu.js";
import { GuestMemory } from "../../../../src/memory/guest_memory.js";
import { assemble } from "./nasm.js";
import { flatEntry } from "./soft_runner.js";

export const K = {
  GDT: 0x1000,
  IDT: 0x2000,
  TSS: 0x3000,
  LOG_COUNT: 0x6100,
  RECOVER: 0x6104,
  RESUME: 0x6108,
  LOG: 0x6200,
  BOOT: 0x7000,
  STACK0: 0x20000,
  PD: 0x100000,
  PT0: 0x101000,
  MEMORY: 16 << 20,
} as const;

/** PTE/PDE bits (SDM vol. 3 table 4-6). */
export const P = 1;
export const RW = 2;
export const US = 4;
export const ACCESSED = 0x20;
export const DIRTY = 0x40;
export const PS = 0x80;

const HAS_CODE = new Set([8, 10, 11, 12, 13, 14, 17]);
/** Fixed places in the blob: the call-gate target and the 32 exception stubs (16 bytes each). */
const GATE_TARGET = K.BOOT + 0x180;
const STUBS = K.BOOT + 0x200;

function kernelSource(body: string): string {
  const stubs: string[] = [];
  for (let v = 0; v < 32; v++) {
    stubs.push("  align 16, db 0xcc");
    if (!HAS_CODE.has(v)) stubs.push("  push dword 0");
    stubs.push(`  push dword ${v}`, "  jmp exc_common");
  }
  return `
BITS 32
ORG 0x${K.BOOT.toString(16)}
%define LOG_COUNT 0x${K.LOG_COUNT.toString(16)}
%define RECOVER 0x${K.RECOVER.toString(16)}
%define RESUME 0x${K.RESUME.toString(16)}
%define RESUME_JMP 0x${(K.RESUME + 4).toString(16)}
%define LOG 0x${K.LOG.toString(16)}
%define STACK0 0x${K.STACK0.toString(16)}
%define PD 0x${K.PD.toString(16)}
%macro EXPECT 1
  mov dword [RECOVER], %1
%endmacro
%macro EXPECT_RESUME 1
  mov dword [RESUME], %1
%endmacro
; enters ring 3 at %1 with ESP %2
%macro TO_RING3 2
  mov ax, 0x23              ; IRET to ring 3 would null DPL-0 data selectors (SDM IRET)
  mov ds, ax
  mov es, ax
  push dword 0x23
  push dword %2
  push dword 0x202
  push dword 0x1b
  push dword %1
  iret
%endmacro
%macro PAGING_ON 0
  mov eax, PD
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80010000
  mov cr0, eax
%endmacro
  lgdt [gdtr]
  jmp dword 0x08:pm
pm:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov fs, ax
  mov gs, ax
  mov esp, STACK0
  lidt [idtr]
  mov ax, 0x28
  ltr ax
  jmp body
gdtr: dw 10*8-1
      dd 0x${K.GDT.toString(16)}
idtr: dw 32*8-1
      dd 0x${K.IDT.toString(16)}
  times 0x${(GATE_TARGET - K.BOOT).toString(16)}-($-$$) db 0
gate_target:
  mov esi, [esp]
  mov edi, [esp+4]
  mov ebp, cs
  retf
  times 0x${(STUBS - K.BOOT).toString(16)}-($-$$) db 0
stubs:
${stubs.join("\n")}
exc_common:
  push eax
  push ebx
  push ds
  push es
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ebx, [LOG_COUNT]
  shl ebx, 4
  mov eax, [esp+16]
  mov [LOG+ebx], eax
  mov eax, [esp+20]
  mov [LOG+ebx+4], eax
  mov eax, cr2
  mov [LOG+ebx+8], eax
  mov eax, [esp+24]
  mov [LOG+ebx+12], eax
  inc dword [LOG_COUNT]
  mov eax, [RECOVER]
  test eax, eax
  jz .resume
  mov dword [RECOVER], 0
  mov [esp+24], eax
  pop es
  pop ds
  pop ebx
  pop eax
  add esp, 8
  iret
.resume:
  mov eax, [RESUME]
  test eax, eax
  jz .stop
  mov [RESUME_JMP], eax
  mov dword [RESUME], 0
  pop es
  pop ds
  pop ebx
  pop eax
  mov esp, STACK0
  push dword 0x10
  pop ds
  push dword 0x10
  pop es
  jmp [RESUME_JMP]
.stop:
  sti
  hlt
  jmp .stop
body:
${body}
end_marker:
  sti
  hlt
  jmp end_marker
`;
}

function flat(access: number, limit = 0xfffff, granular = true): [number, number] {
  return [limit & 0xffff, (limit & 0xf0000) | (granular ? 0x00c00000 : 0x00400000) | (access << 8)];
}

export interface KernelRun {
  stop: SoftStop;
  cpu: Cpu;
  memory: GuestMemory;
  /** The exception log: vector, error code, CR2, EIP. */
  log: { vector: number; errorCode: number; cr2: number; eip: number }[];
}

/**
 * Runs a ring-0 body. `setup` may write page tables and data before the CPU starts; the body's
 * labels are NASM labels in the same blob.
 */
export function runKernel(body: string, setup?: (m: GuestMemory) => void): KernelRun {
  const blob = assemble(kernelSource(body));
  const memory = GuestMemory.shared([{ base: 0, size: K.MEMORY }]);
  let ns = 0;
  const soft = new SoftCpu({
    memory,
    ports: new PortBus(),
    mmio: new MmioBus(),
    interrupts: { hasInterrupt: () => false, acknowledgeInterrupt: () => 0 },
    clock: { nowNs: () => (ns += 1000) },
    tscHz: 1e9,
  });
  const cpu = soft.cpu;
  memory.write(K.BOOT, blob);
  const stubs = STUBS;
  const gateTarget = GATE_TARGET;
  const gdt: [number, number][] = [
    [0, 0],
    flat(0x9a),
    flat(0x92),
    flat(0xfa),
    flat(0xf2),
    [(K.TSS << 16) | 0x67, 0x00008900],
    flat(0x92, 0xfff, false),
    flat(0x12), // not present
    flat(0x9a), // code used as data
    // 32-bit call gate, DPL 3, to 0x08:gate_target (SDM vol. 3 fig. 5-8)
    [(0x08 << 16) | (gateTarget & 0xffff), (gateTarget & 0xffff0000) | 0xec00],
  ];
  for (const [i, [lo, hi]] of gdt.entries()) {
    memory.writeU32(K.GDT + 8 * i, lo >>> 0);
    memory.writeU32(K.GDT + 8 * i + 4, hi >>> 0);
  }
  for (let v = 0; v < 32; v++) {
    const target = stubs + 16 * v;
    memory.writeU32(K.IDT + 8 * v, ((0x08 << 16) | (target & 0xffff)) >>> 0);
    memory.writeU32(K.IDT + 8 * v + 4, ((target & 0xffff0000) | 0x8e00) >>> 0);
  }
  memory.writeU32(K.TSS + 4, K.STACK0);
  memory.writeU32(K.TSS + 8, 0x10);
  memory.writeU16(K.TSS + 0x66, 0x68);
  setup?.(memory);
  soft.loadEntryState(flatEntry(K.BOOT));
  const stop = soft.run(5_000_000);
  const n = memory.readU32(K.LOG_COUNT);
  const log = [];
  for (let i = 0; i < Math.min(n, 64); i++) {
    const e = K.LOG + 16 * i;
    log.push({
      vector: memory.readU32(e),
      errorCode: memory.readU32(e + 4),
      cr2: memory.readU32(e + 8),
      eip: memory.readU32(e + 12),
    });
  }
  return { stop, cpu, memory, log };
}

/** Identity-maps 0-8 MiB with 4 KiB supervisor read/write pages. */
export function identityPaging(m: GuestMemory, extraPdeFlags = 0): void {
  for (let t = 0; t < 2; t++) {
    m.writeU32(K.PD + 4 * t, (K.PT0 + 0x1000 * t) | P | RW | US | extraPdeFlags);
    for (let i = 0; i < 1024; i++) {
      m.writeU32(K.PT0 + 0x1000 * t + 4 * i, ((t * 1024 + i) << 12) | P | RW);
    }
  }
}

/** Address of the PTE for a linear address below 8 MiB (in the identity tables). */
export function pteAddress(linear: number): number {
  return K.PT0 + 4 * (linear >>> 12);
}
