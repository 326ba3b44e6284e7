/**
 * The differential harness: one ring-0 program runs on two software CPUs over identical memory,
 * one with the interpreter (the reference) and one with the binary translator, and everything
 * architectural must agree afterwards: the general registers, EIP, EFLAGS (without the flags the
 * SDM leaves undefined at that point), segment selectors, CR0/CR2/CR3, all of RAM (so every byte
 * written, the exception log and the stack frames), the sequence of stops of `SoftCpu.run` with
 * the instruction count at each, the interrupts acknowledged and at which instruction count, and
 * the exception/interrupt counters. Instruction counts must agree exactly: they drive the guest
 * clock (engines/soft/instruction_clock.ts).
 *
 * The machine (one NASM blob at BOOT, entered in 32-bit protected mode, ring 0):
 *   GDT 0x1000: 0x08 code0, 0x10 data0, 0x18 16-bit code0 (base 0, limit 64 KiB), 0x20 16-bit
 *     data0, 0x28 TSS. IDT 0x2000: 32 exception gates and vector 0x20 (the harness's interrupt).
 *   LOG_COUNT/RECOVER/IRQ_FLAG at 0x6100.., the log at 0x6200 (16 bytes an entry: vector, error
 *     code, CR2, EIP; at most 60 entries, the count goes on).
 *   The handler logs, then: an interrupt (vector >= 32) sets IRQ_FLAG and returns; a #PF whose CR2
 *     is in PF_LO..PF_HI marks the page present and returns (the instruction restarts); any other
 *     exception resumes at [RECOVER] (cleared when used) or, if it is 0, halts with IF=0 (the run
 *     ends).
 *   Paging (unless `paging: false`): page directory PD, 0-16 MiB identity-mapped by 4 KiB pages,
 *     except PF_LO..PF_HI (not present until touched), UNMAPPED (never present), ALIAS_A and
 *     ALIAS_B (both map the frame ALIAS_FRAME), MMIO_CODE (-> physical MMIO_PHYS, a device that
 *     serves `mmioCode` bytes) and MMIO_NONE (-> a physical address nothing claims: reads all ones).
 * A body ends with `cli; hlt` (the END macro).
 */
import { MmioBus } from "../../../../src/bus/mmio_bus.js";
import { PortBus } from "../../../../src/bus/port_bus.js";
import type { SoftStop } from "../../../../src/engines/soft/soft_cpu.js";
import { SoftCpu } from "../../../../src/engines/soft/soft_cpu.js";
import type { SoftTechnique } from "../../../../src/engines/soft/technique.js";
import { GuestMemory } from "../../../../src/memory/guest_memory.js";
import { assemble } from "../oracle/nasm.js";
import { flatEntry } from "../oracle/soft_runner.js";

export const M = {
  GDT: 0x1000,
  IDT: 0x2000,
  TSS: 0x3000,
  LOG_COUNT: 0x6100,
  RECOVER: 0x6104,
  IRQ_FLAG: 0x6108,
  LOG: 0x6200,
  BOOT: 0x7000,
  STACK0: 0x90000,
  PD: 0x100000,
  PT0: 0x101000,
  ALIAS_FRAME: 0x300000,
  DATA: 0x500000,
  PF_LO: 0x600000,
  PF_HI: 0x610000,
  UNMAPPED: 0x6f0000,
  ALIAS_A: 0x700000,
  ALIAS_B: 0x701000,
  MMIO_CODE: 0x710000,
  MMIO_NONE: 0x711000,
  MMIO_PHYS: 0x2000000,
  MMIO_NONE_PHYS: 0x2100000,
  MEMORY: 16 << 20,
} as const;

/** The harness's interrupt vector (an external interrupt, as a PIC would deliver it). */
export const IRQ_VECTOR = 0x20;

/** Where the 32 exception stubs (16 bytes each) and then the interrupt stub sit in the blob. */
const STUB_OFFSET = 0x200;

/** Vectors that push an error code (SDM vol. 3 table 6-1). */
const HAS_CODE = new Set([8, 10, 11, 12, 13, 14, 17]);

/** EFLAGS bits compared: CF PF AF ZF SF TF IF DF OF, IOPL, NT, RF, VM, AC, ID (reserved bit 1 too). */
export const EFLAGS_COMPARED = 0x3f7fd7;

function blobSource(body: string, paging: boolean): string {
  const stubs: string[] = [];
  for (let v = 0; v < 32; v++) {
    stubs.push("  align 16, db 0xcc", `stub${v}:`);
    if (!HAS_CODE.has(v)) stubs.push("  push dword 0");
    stubs.push(`  push dword ${v}`, "  jmp exc_common");
  }
  const hex = (v: number) => `0x${v.toString(16)}`;
  const defines = Object.entries(M)
    .map(([k, v]) => `%define ${k} ${hex(v)}`)
    .join("\n");
  return `
BITS 32
ORG ${hex(M.BOOT)}
${defines}
%define IRQ_VECTOR ${hex(IRQ_VECTOR)}
%define STUB_OFFSET ${hex(STUB_OFFSET)}
%macro END 0
  cli
  hlt
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
${
  paging
    ? `  mov eax, PD
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80010000
  mov cr0, eax`
    : ""
}
  xor eax, eax
  jmp body
gdtr: dw 6*8-1
      dd GDT
idtr: dw 256*8-1
      dd IDT
  times STUB_OFFSET-($-$$) db 0xcc
stubs:
${stubs.join("\n")}
  align 16, db 0xcc
irq_stub:
  push dword 0
  push dword IRQ_VECTOR
exc_common:                     ; [esp] vector, error code, EIP, CS, EFLAGS
  push eax
  push ebx
  mov ebx, [LOG_COUNT]
  cmp ebx, 60
  jae .logged
  shl ebx, 4
  mov eax, [esp+8]
  mov [LOG+ebx], eax
  mov eax, [esp+12]
  mov [LOG+ebx+4], eax
  mov eax, cr2
  mov [LOG+ebx+8], eax
  mov eax, [esp+16]
  mov [LOG+ebx+12], eax
.logged:
  inc dword [LOG_COUNT]
  mov eax, [esp+8]
  cmp eax, 32
  jb .exception
  mov dword [IRQ_FLAG], 1
  jmp .resume
.exception:
  cmp eax, 14
  jne .recover
  mov eax, cr2
  cmp eax, PF_LO
  jb .recover
  cmp eax, PF_HI
  jae .recover
  shr eax, 12
  or dword [PT0+eax*4], 1       ; map the page; the faulting instruction restarts
  mov eax, cr2
  invlpg [eax]
  jmp .resume
.recover:
  mov eax, [RECOVER]
  test eax, eax
  jz .stop
  mov dword [RECOVER], 0
  mov [esp+16], eax
.resume:
  pop ebx
  pop eax
  add esp, 8
  iret
.stop:
  cli
  hlt
  jmp .stop
  align 16, db 0xcc
body:
${body}
  END
`;
}

/** A descriptor: base, limit (20 bits), access byte, flags nibble (G D/B L AVL). */
function descriptor(base: number, limit: number, access: number, flags: number): [number, number] {
  const lo = ((base & 0xffff) << 16) | (limit & 0xffff);
  const hi =
    (base & 0xff000000) | ((flags & 0xf) << 20) | (limit & 0xf0000) | (access << 8) | ((base >>> 16) & 0xff);
  return [lo >>> 0, hi >>> 0];
}

export interface DiffCase {
  /** For messages: what runs, and the seed that reproduces it. */
  name: string;
  /** NASM body (32-bit, ring 0; may switch to 16-bit code); the END macro is appended. */
  body: string;
  /** Default true: the bootstrap turns paging on. */
  paging?: boolean;
  /** Writes initial data before the CPU starts (same on both sides). */
  setup?: (m: GuestMemory) => void;
  /** Bytes the MMIO code device at MMIO_PHYS serves (default: none, so 0xff). */
  mmioCode?: Uint8Array;
  /** Arithmetic flags undefined at the end (not compared). */
  undefinedFlags?: number;
  /** Instruction counts at which the harness raises its interrupt (IRQ_VECTOR). */
  interruptsAt?: number[];
  /** At most this many instructions in all (default 2 000 000). */
  maxInstructions?: number;
}

export interface Outcome {
  technique: SoftTechnique;
  regs: number[];
  eip: number;
  eflags: number;
  segments: number[];
  control: { cr0: number; cr2: number; cr3: number; cpl: number };
  instructions: number;
  /** Every stop of SoftCpu.run, with the instruction count when it returned. */
  stops: string[];
  /** The instruction count at each interrupt acknowledgement. */
  acknowledgedAt: number[];
  exceptionsByVector: number[];
  interruptsByVector: number[];
  memory: Uint8Array;
  /** The translator's counters (technique bt). */
  bt: SoftCpu["stats"]["bt"];
  /** The last stop's report (shutdown, unimplemented), for messages. */
  report: string;
}

const blobs = new Map<string, Uint8Array>();

/**
 * Runs `c` with `technique`. `chunks` are the budgets of the successive `SoftCpu.run` calls
 * (cycled), so a run can be cut at arbitrary instruction counts: a block must stop exactly where
 * the budget ends, and the next run must resume there.
 */
export function runCase(
  c: DiffCase,
  technique: SoftTechnique,
  chunks: readonly number[] = [1 << 20],
  hotThreshold = 1,
): Outcome {
  const paging = c.paging ?? true;
  const key = `${paging}\n${c.body}`;
  let blob = blobs.get(key);
  if (blob === undefined) {
    blob = assemble(blobSource(c.body, paging));
    blobs.set(key, blob);
  }
  const memory = GuestMemory.shared([{ base: 0, size: M.MEMORY }]);
  const mmio = new MmioBus();
  const code = c.mmioCode ?? new Uint8Array(0);
  mmio.register(M.MMIO_PHYS, 0x1000, {
    name: "differential-mmio-code",
    read: (offset, size) => {
      let v = 0;
      for (let k = size - 1; k >= 0; k--) v = v * 256 + (code[offset + k] ?? 0xff);
      return v;
    },
    write: () => {},
  });
  const pending = [...(c.interruptsAt ?? [])].sort((a, b) => a - b);
  const acknowledgedAt: number[] = [];
  let forced = false;
  let ns = 0;
  // The CPU is created below; the interrupt source reads its instruction count.
  let soft: SoftCpu | undefined;
  soft = new SoftCpu({
    technique,
    btHotThreshold: hotThreshold,
    memory,
    ports: new PortBus(),
    mmio,
    interrupts: {
      hasInterrupt: () => pending.length > 0 && (forced || soft!.cpu.instructions >= pending[0]!),
      acknowledgeInterrupt: () => {
        pending.shift();
        forced = false;
        acknowledgedAt.push(soft!.cpu.instructions);
        return IRQ_VECTOR;
      },
    },
    clock: { nowNs: () => (ns += 1000) },
    tscHz: 1e9,
  });
  const cpu = soft.cpu;
  memory.write(M.BOOT, blob);
  const gdt: [number, number][] = [
    [0, 0],
    descriptor(0, 0xfffff, 0x9a, 0xc),
    descriptor(0, 0xfffff, 0x92, 0xc),
    descriptor(0, 0xffff, 0x9a, 0x0), // 16-bit code, base 0, 64 KiB
    descriptor(0, 0xffff, 0x92, 0x0), // 16-bit data
    descriptor(M.TSS, 0x67, 0x89, 0),
  ];
  for (const [i, [lo, hi]] of gdt.entries()) {
    memory.writeU32(M.GDT + 8 * i, lo);
    memory.writeU32(M.GDT + 8 * i + 4, hi);
  }
  const stub0 = M.BOOT + STUB_OFFSET;
  const gate = (v: number, target: number) => {
    memory.writeU32(M.IDT + 8 * v, ((0x08 << 16) | (target & 0xffff)) >>> 0);
    memory.writeU32(M.IDT + 8 * v + 4, ((target & 0xffff0000) | 0x8e00) >>> 0);
  };
  for (let v = 0; v < 32; v++) gate(v, stub0 + 16 * v);
  gate(IRQ_VECTOR, stub0 + 16 * 32);
  memory.writeU32(M.TSS + 4, M.STACK0);
  memory.writeU32(M.TSS + 8, 0x10);
  memory.writeU16(M.TSS + 0x66, 0x68);
  for (let t = 0; t < 4; t++) {
    memory.writeU32(M.PD + 4 * t, (M.PT0 + 0x1000 * t) | 7);
    for (let i = 0; i < 1024; i++) {
      const page = (t * 1024 + i) << 12;
      memory.writeU32(M.PT0 + 0x1000 * t + 4 * i, page | 3);
    }
  }
  const pte = (linear: number, value: number) => memory.writeU32(M.PT0 + 4 * (linear >>> 12), value);
  for (let p = M.PF_LO; p < M.PF_HI; p += 0x1000) pte(p, p | 2);
  pte(M.UNMAPPED, 0);
  pte(M.ALIAS_A, M.ALIAS_FRAME | 3);
  pte(M.ALIAS_B, M.ALIAS_FRAME | 3);
  pte(M.MMIO_CODE, M.MMIO_PHYS | 3);
  pte(M.MMIO_NONE, M.MMIO_NONE_PHYS | 3);
  c.setup?.(memory);
  soft.loadEntryState(flatEntry(M.BOOT));

  const max = c.maxInstructions ?? 2_000_000;
  const stops: string[] = [];
  let last: SoftStop = { kind: "budget" };
  for (let k = 0; cpu.instructions < max; k++) {
    const budget = Math.min(chunks[k % chunks.length]!, max - cpu.instructions);
    last = soft.run(budget);
    stops.push(`${last.kind}@${cpu.instructions}`);
    if (stops.length > 200_000) break;
    if (last.kind === "budget") continue;
    if (last.kind === "halted" && pending.length > 0) {
      forced = true; // the program waits for the interrupt: it arrives now
      continue;
    }
    break;
  }
  const report =
    last.kind === "shutdown"
      ? `${last.reason}\n${last.report}`
      : last.kind === "unimplemented"
        ? last.report
        : last.kind;
  // Stops are compared as a sequence; a long run of budget stops is summarised after the first ones.
  return {
    technique,
    regs: Array.from(cpu.regs, (r) => r >>> 0),
    eip: cpu.eip >>> 0,
    eflags: cpu.getEflags() >>> 0,
    segments: Array.from(cpu.segSel, (s) => s & 0xffff),
    control: { cr0: cpu.cr0 >>> 0, cr2: cpu.cr2 >>> 0, cr3: cpu.cr3 >>> 0, cpl: cpu.cpl },
    instructions: cpu.instructions,
    stops,
    acknowledgedAt,
    exceptionsByVector: [...soft.stats.exceptionsByVector],
    interruptsByVector: [...soft.stats.interruptsByVector],
    memory: memory.slice(0, M.MEMORY).slice(),
    bt: soft.stats.bt,
    report,
  };
}

const h = (v: number) => `0x${(v >>> 0).toString(16).padStart(8, "0")}`;
const REG = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
const SEG = ["es", "cs", "ss", "ds", "fs", "gs", "ldtr", "tr"];

/** Differences between the reference `a` and `b`, as readable lines (empty when they agree). */
export function compareOutcomes(a: Outcome, b: Outcome, undefinedFlags = 0): string[] {
  const out: string[] = [];
  const x = `${a.technique} vs ${b.technique}`;
  if (a.instructions !== b.instructions) out.push(`instructions: ${a.instructions} vs ${b.instructions}`);
  a.regs.forEach((r, i) => {
    if (r !== b.regs[i]) out.push(`${REG[i]}: ${h(r)} vs ${h(b.regs[i]!)}`);
  });
  if (a.eip !== b.eip) out.push(`eip: ${h(a.eip)} vs ${h(b.eip)}`);
  const mask = EFLAGS_COMPARED & ~undefinedFlags;
  if ((a.eflags & mask) !== (b.eflags & mask))
    out.push(`eflags&${h(mask)}: ${h(a.eflags & mask)} vs ${h(b.eflags & mask)}`);
  a.segments.forEach((s, i) => {
    if (s !== b.segments[i]) out.push(`${SEG[i]}: ${s.toString(16)} vs ${b.segments[i]!.toString(16)}`);
  });
  for (const k of ["cr0", "cr2", "cr3", "cpl"] as const) {
    if (a.control[k] !== b.control[k]) out.push(`${k}: ${h(a.control[k])} vs ${h(b.control[k])}`);
  }
  const firstStop = a.stops.findIndex((s, i) => s !== b.stops[i]);
  if (firstStop >= 0 || a.stops.length !== b.stops.length) {
    const i = firstStop >= 0 ? firstStop : Math.min(a.stops.length, b.stops.length);
    out.push(
      `stops differ from run() call ${i}: ${a.stops.slice(i, i + 3).join(", ") || "(none)"} vs ${b.stops.slice(i, i + 3).join(", ") || "(none)"} (${a.stops.length} vs ${b.stops.length} calls)`,
    );
  }
  const endA = a.report.split("\n")[0];
  const endB = b.report.split("\n")[0];
  if (endA !== endB) out.push(`ended: ${endA} vs ${endB}`);
  if (a.acknowledgedAt.join() !== b.acknowledgedAt.join())
    out.push(`interrupts acknowledged at ${a.acknowledgedAt.join(",")} vs ${b.acknowledgedAt.join(",")}`);
  if (a.exceptionsByVector.join() !== b.exceptionsByVector.join())
    out.push(`exceptions by vector ${counts(a.exceptionsByVector)} vs ${counts(b.exceptionsByVector)}`);
  if (a.interruptsByVector.join() !== b.interruptsByVector.join())
    out.push(`interrupts by vector ${counts(a.interruptsByVector)} vs ${counts(b.interruptsByVector)}`);
  let pages = 0;
  for (let p = 0; p < a.memory.length && pages < 8; p += 0x1000) {
    const pa = a.memory.subarray(p, p + 0x1000);
    const pb = b.memory.subarray(p, p + 0x1000);
    if (Buffer.compare(pa, pb) === 0) continue;
    pages++;
    const o = pa.findIndex((v, k) => v !== pb[k]);
    const at = p + o;
    out.push(
      `memory at ${h(at)}${p === 0x6000 ? " (exception log)" : ""}: ${Buffer.from(a.memory.subarray(at, at + 8)).toString("hex")} vs ${Buffer.from(b.memory.subarray(at, at + 8)).toString("hex")}`,
    );
  }
  if (out.length > 0) out.unshift(`${x}:`);
  return out;
}

function counts(v: number[]): string {
  return (
    v
      .map((n, i) => (n > 0 ? `#${i}:${n}` : ""))
      .filter(Boolean)
      .join(" ") || "none"
  );
}

/** The exception log of an outcome (vector, error code, CR2, EIP per entry). */
export function exceptionLog(o: Outcome): { vector: number; errorCode: number; cr2: number; eip: number }[] {
  const v = new DataView(o.memory.buffer, o.memory.byteOffset);
  const n = Math.min(v.getUint32(M.LOG_COUNT, true), 60);
  const log = [];
  for (let i = 0; i < n; i++) {
    const e = M.LOG + 16 * i;
    log.push({
      vector: v.getUint32(e, true),
      errorCode: v.getUint32(e + 4, true),
      cr2: v.getUint32(e + 8, true),
      eip: v.getUint32(e + 12, true),
    });
  }
  return log;
}

export interface Differential {
  reference: Outcome;
  translated: Outcome;
  /** Empty when the two agree. */
  problems: string[];
}

/**
 * Runs `c` under the interpreter and the translator with each budget schedule in `schedules`,
 * and compares each translated run with the reference run of the same schedule. The translator
 * runs twice: compiling every block on its first entry (the reported outcome), and compiling on
 * the third (so blocks go from interpreted to compiled in the middle of the case, as in a guest).
 */
export function differential(
  c: DiffCase,
  schedules: readonly (readonly number[])[] = [[1 << 20]],
): Differential {
  let reference: Outcome | undefined;
  let translated: Outcome | undefined;
  const problems: string[] = [];
  for (const chunks of schedules) {
    reference = runCase(c, "interp", chunks);
    for (const threshold of [3, 1]) {
      translated = runCase(c, "bt", chunks, threshold);
      const d = compareOutcomes(reference, translated, c.undefinedFlags ?? 0);
      if (d.length > 0) {
        problems.push(
          `${c.name}, budgets ${chunks.join(",")}, compiled on entry ${threshold}:\n  ${d.join("\n  ")}`,
        );
        if (reference.report !== translated.report)
          problems.push(
            `  reference ended: ${reference.report.split("\n")[0]}\n  bt ended: ${translated.report.split("\n")[0]}`,
          );
      }
    }
  }
  return { reference: reference!, translated: translated!, problems };
}

/** Whether the translator ran at all in `o` (before it lands, technique bt runs the interpreter). */
export function translatorRan(o: Outcome): boolean {
  return o.bt !== undefined && o.bt.blocksTranslated > 0;
}

/** A line for t.diagnostic: what the translator did, or that it has not landed. */
export function translatorNote(o: Outcome): string {
  if (!translatorRan(o))
    return "technique bt translated no block: the translator has not landed, so this compared the interpreter with itself";
  const b = o.bt!;
  return `bt: ${b.blocksTranslated} blocks translated, ${b.blockExecutions} executions (${b.translatedInstructions} instructions), ${b.blocksInvalidated} invalidated, ${b.blocksEvicted} evicted, ${b.cacheBlocks} cached`;
}
