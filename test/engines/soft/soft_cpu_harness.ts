/**
 * A tiny machine for soft-CPU unit tests: 4 MiB of RAM, a flat protected-mode GDT (ring-0 and
 * ring-3 code/data, a TSS), an IDT whose every vector points at a stub that records the vector and
 * halts, and code loaded at CODE. Tests write machine code (bytes with the assembly beside them).
 */
import type { EntryState, SegmentState } from "../../../src/boot/entry_state.js";
import { MmioBus } from "../../../src/bus/mmio_bus.js";
import { PortBus } from "../../../src/bus/port_bus.js";
import { ManualClock } from "../../../src/devices/clock.js";
import { GuestMemory } from "../../../src/memory/guest_memory.js";
import { type SoftStop, SoftCpu } from "../../../src/engines/soft/soft_cpu.js";

export const CODE = 0x1000;
export const GDT = 0x500;
export const IDT = 0x800;
export const TSS = 0x700;
/** Each exception stub stores its vector at VECTOR_SLOT, the error code (if any) after it, and halts. */
export const STUBS = 0x2000;
export const VECTOR_SLOT = 0x3000;
export const STACK_TOP = 0x9000;
export const USER_STACK_TOP = 0xa000;
export const KERNEL_CS = 0x08;
export const KERNEL_DS = 0x10;
export const USER_CS = 0x1b;
export const USER_DS = 0x23;
export const TSS_SEL = 0x28;

/** Vectors that push an error code (SDM vol. 3 table 6-1). */
const HAS_CODE = new Set([8, 10, 11, 12, 13, 14, 17]);

function descriptor(base: number, limit: number, access: number, flags: number): [number, number] {
  const lo = ((base & 0xffff) << 16) | (limit & 0xffff);
  const hi =
    (base & 0xff000000) | ((flags & 0xf) << 20) | (limit & 0xf0000) | (access << 8) | ((base >>> 16) & 0xff);
  return [lo >>> 0, hi >>> 0];
}

export interface TestMachine {
  memory: GuestMemory;
  soft: SoftCpu;
  ports: PortBus;
  /** Runs until the CPU stops (HLT with IF=0 ends a test) and returns the stop. */
  run(budget?: number): SoftStop;
  /** The vector recorded by the exception stubs (-1 if none ran) and its error code. */
  vector(): number;
  errorCode(): number;
}

const flat = (selector: number, type: number, dpl: number): SegmentState => ({
  selector,
  base: 0,
  limit: 0xffffffff,
  type,
  present: true,
  dpl,
  s: true,
  db: true,
  l: false,
  g: true,
});

export function machine(
  code: number[],
  opts: { cpl3?: boolean; gdtExtra?: [number, number][] } = {},
): TestMachine {
  const memory = GuestMemory.shared([{ base: 0, size: 4 * 1024 * 1024 }]);
  const ports = new PortBus();
  const mmio = new MmioBus();
  const clock = new ManualClock();
  const soft = new SoftCpu({
    memory,
    ports,
    mmio,
    interrupts: { hasInterrupt: () => false, acknowledgeInterrupt: () => 0 },
    clock,
    tscHz: 1e9,
  });
  const gdt = [
    [0, 0],
    descriptor(0, 0xfffff, 0x9a, 0xc),
    descriptor(0, 0xfffff, 0x92, 0xc),
    descriptor(0, 0xfffff, 0xfa, 0xc),
    descriptor(0, 0xfffff, 0xf2, 0xc),
    descriptor(TSS, 0x67, 0x89, 0),
    ...(opts.gdtExtra ?? []),
  ];
  gdt.forEach(([lo, hi], k) => {
    memory.writeU32(GDT + k * 8, lo!);
    memory.writeU32(GDT + k * 8 + 4, hi!);
  });
  // TSS: ESP0 and SS0 for interrupts from ring 3; I/O map base beyond the limit (no bitmap).
  memory.writeU32(TSS + 4, STACK_TOP);
  memory.writeU32(TSS + 8, KERNEL_DS);
  memory.writeU16(TSS + 0x66, 0x68);
  memory.writeU32(VECTOR_SLOT, 0xffffffff);
  for (let v = 0; v < 32; v++) {
    const stub = STUBS + v * 32;
    // Interrupt gate, DPL 3 (so INT n from ring 3 works in tests), present.
    memory.writeU32(IDT + v * 8, ((KERNEL_CS << 16) | (stub & 0xffff)) >>> 0);
    memory.writeU32(IDT + v * 8 + 4, ((stub & 0xffff0000) | 0xee00) >>> 0);
    const bytes = [0xc7, 0x05, ...u32(VECTOR_SLOT), ...u32(v)]; // mov dword [VECTOR_SLOT], v
    if (HAS_CODE.has(v)) bytes.push(0x58, 0xa3, ...u32(VECTOR_SLOT + 4)); // pop eax; mov [slot+4], eax
    bytes.push(0xf4); // hlt
    memory.write(stub, Uint8Array.from(bytes));
  }
  memory.write(CODE, Uint8Array.from(code));
  const entry: EntryState = {
    mode: "protected32",
    rip: CODE,
    rsp: STACK_TOP,
    rsi: 0,
    rflags: 2,
    cr0: 0x11,
    cr3: 0,
    cr4: 0,
    efer: 0,
    cs: flat(KERNEL_CS, 0xb, 0),
    ds: flat(KERNEL_DS, 0x3, 0),
    es: flat(KERNEL_DS, 0x3, 0),
    fs: flat(KERNEL_DS, 0x3, 0),
    gs: flat(KERNEL_DS, 0x3, 0),
    ss: flat(KERNEL_DS, 0x3, 0),
    tr: { ...flat(TSS_SEL, 0xb, 0), base: TSS, limit: 0x67, s: false, g: false },
    ldt: { ...flat(0, 0x2, 0), present: false, s: false },
    gdt: { base: GDT, limit: gdt.length * 8 - 1 },
    idt: { base: IDT, limit: 32 * 8 - 1 },
  };
  if (opts.cpl3) {
    entry.cs = flat(USER_CS, 0xb, 3);
    entry.ss = flat(USER_DS, 0x3, 3);
    entry.ds = entry.es = entry.fs = entry.gs = flat(USER_DS, 0x3, 3);
    entry.rsp = USER_STACK_TOP;
  }
  soft.loadEntryState(entry);
  return {
    memory,
    soft,
    ports,
    run: (budget = 100_000) => soft.run(budget),
    vector: () => memory.readU32(VECTOR_SLOT) | 0,
    errorCode: () => memory.readU32(VECTOR_SLOT + 4),
  };
}

export function u32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

/** The machine stops at the HLT that ends each test (IF=0). */
export function isEnd(stop: SoftStop): boolean {
  return stop.kind === "shutdown" && stop.reason === "HLT with interrupts disabled";
}

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

let nasmChecked: boolean | undefined;
/** Whether Debian's nasm is installed (tests that assemble skip without it). */
export function haveNasm(): boolean {
  if (nasmChecked === undefined) {
    try {
      execFileSync("nasm", ["-v"], { stdio: "ignore" });
      nasmChecked = true;
    } catch {
      nasmChecked = false;
    }
  }
  return nasmChecked;
}

/** Assembles 32-bit code at CODE with nasm (our own sources, assembled at test time). */
export function asm(source: string): number[] {
  const dir = mkdtempSync(join(tmpdir(), "vessel-asm-"));
  try {
    writeFileSync(join(dir, "t.asm"), `bits 32\norg ${CODE}\n${source}\n`);
    execFileSync("nasm", ["-f", "bin", "-o", join(dir, "t.bin"), join(dir, "t.asm")], { stdio: "pipe" });
    return [...readFileSync(join(dir, "t.bin"))];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
