/**
 * Runs snippets on Vessel's software CPU, in the same world the KVM oracle gives them: ring 3,
 * flat 32-bit segments, code/data/stack at `LAYOUT`. A small bootstrap (assembled with nasm,
 * below; entered in 32-bit protected mode, ring 0, like a kernel's 32-bit entry) loads a GDT, an IDT whose 32 exception gates lead to ring-0 stubs that push the
 * vector and halt, and a TSS for the ring 3 -> 0 stack switch, then IRETs into the snippet. So the
 * architectural paths (LGDT/LIDT/LTR, a far jump reloading CS, IRET to ring 3, exception delivery
 * across rings) are exercised too, as the guest kernel will exercise them.
 *
 * Memory map (below the snippet's LAYOUT): GDT 0x1000, IDT 0x2000, TSS 0x3000, initial registers
 * 0x6000, bootstrap 0x7000, exception stubs 0x7800 (16 bytes each), ring-0 stack top 0x9000.
 * Paging: identity map of 0-8 MiB (page directory 0x10000, tables 0x11000), user pages only for
 * the snippet's 0x400000-0x5fffff, as under the KVM oracle.
 */
import { MmioBus } from "../../../../src/bus/mmio_bus.js";
import { PortBus } from "../../../../src/bus/port_bus.js";
import type { EntryState, SegmentState } from "../../../../src/boot/entry_state.js";
import type { Cpu } from "../../../../src/engines/soft/cpu.js";
import { SoftCpu } from "../../../../src/engines/soft/soft_cpu.js";
import { DEFAULT_SOFT_TECHNIQUE, type SoftTechnique } from "../../../../src/engines/soft/technique.js";
import { GuestMemory } from "../../../../src/memory/guest_memory.js";
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

const GDT = 0x1000;
const IDT = 0x2000;
const TSS = 0x3000;
const STUBS = 0x7800;
const INIT = 0x6000;
const BOOT = 0x7000;
const RING0_STACK = 0x9000;
const PD = 0x10000;
const PT = 0x11000;
const MEMORY_SIZE = 8 << 20;

/** Vectors that push an error code (SDM vol. 3 table 6-1). */
const HAS_CODE = new Set([8, 10, 11, 12, 13, 14, 17]);

function bootSource(): string {
  const stubs: string[] = [];
  for (let v = 0; v < 32; v++) {
    stubs.push(`  align 16, db 0xcc`, `stub${v}:`);
    if (!HAS_CODE.has(v)) stubs.push("  push dword 0");
    stubs.push(`  push dword ${v}`, "  sti", "  hlt", "  jmp $");
  }
  return `
BITS 32
ORG 0x${BOOT.toString(16)}
  lgdt [gdtr]
  jmp dword 0x08:pm
pm:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov fs, ax
  mov gs, ax
  mov esp, 0x${RING0_STACK.toString(16)}
  lidt [idtr]
  mov ax, 0x28
  ltr ax
  mov eax, 0x${PD.toString(16)}              ; paging: the snippet's pages are the only user pages
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80010000                    ; PG | WP
  mov cr0, eax
  push dword 0x23                       ; SS
  push dword [0x${(INIT + 16).toString(16)}]   ; ESP
  push dword [0x${(INIT + 32).toString(16)}]   ; EFLAGS
  push dword 0x1b                       ; CS
  push dword 0x${LAYOUT.code.toString(16)}     ; EIP
  mov ax, 0x23
  mov ds, ax
  mov es, ax
  mov fs, ax
  mov gs, ax
  mov ecx, [0x${(INIT + 4).toString(16)}]
  mov edx, [0x${(INIT + 8).toString(16)}]
  mov ebx, [0x${(INIT + 12).toString(16)}]
  mov ebp, [0x${(INIT + 20).toString(16)}]
  mov esi, [0x${(INIT + 24).toString(16)}]
  mov edi, [0x${(INIT + 28).toString(16)}]
  mov eax, [0x${INIT.toString(16)}]
  iret
gdtr: dw 6*8-1
      dd 0x${GDT.toString(16)}
idtr: dw 32*8-1
      dd 0x${IDT.toString(16)}
  times 0x${(STUBS - BOOT).toString(16)}-($-$$) db 0
${stubs.join("\n")}
`;
}

const flatSegment = (selector: number, type: number): SegmentState => ({
  selector,
  base: 0,
  limit: 0xffffffff,
  type,
  present: true,
  dpl: 0,
  s: true,
  db: true,
  l: false,
  g: true,
});

/**
 * The state the bootstraps start from: 32-bit protected mode, ring 0, flat segments, CR0 = PE MP
 * NE ET, interrupts off (a kernel's 32-bit entry; the bootstraps then load their own GDT, IDT and
 * TSS).
 */
export function flatEntry(rip: number): EntryState {
  return {
    mode: "protected32",
    rip,
    rsp: 0x8000,
    rsi: 0,
    rflags: 2,
    cr0: 0x33,
    cr3: 0,
    cr4: 0,
    efer: 0,
    cs: flatSegment(0x08, 0xb),
    ds: flatSegment(0x10, 0x3),
    es: flatSegment(0x10, 0x3),
    fs: flatSegment(0x10, 0x3),
    gs: flatSegment(0x10, 0x3),
    ss: flatSegment(0x10, 0x3),
    tr: { ...flatSegment(0, 0xb), limit: 0xffff, g: false, s: false },
    ldt: { ...flatSegment(0, 0x2), limit: 0xffff, present: false, s: false, g: false },
    gdt: { base: 0, limit: 0xffff },
    idt: { base: 0, limit: 0x3ff },
  };
}

/** A flat 4 GiB segment descriptor with access byte `access` (G=1, D/B=1). */
function flat(access: number): [number, number] {
  return [0x0000ffff, 0x00cf0000 | (access << 8)];
}

export interface SoftMachine {
  soft: SoftCpu;
  cpu: Cpu;
  memory: GuestMemory;
}

/**
 * Builds a CPU and memory with the bootstrap, descriptor tables and stubs in place. With the
 * binary translator every block is compiled on its first entry (btHotThreshold 1): a snippet runs
 * once, so the default threshold would leave it all to the interpreter.
 */
export function buildSoftMachine(
  boot: Uint8Array,
  technique: SoftTechnique = DEFAULT_SOFT_TECHNIQUE,
): SoftMachine {
  const memory = GuestMemory.shared([{ base: 0, size: MEMORY_SIZE }]);
  let ns = 0;
  const soft = new SoftCpu({
    memory,
    ports: new PortBus(),
    mmio: new MmioBus(),
    interrupts: { hasInterrupt: () => false, acknowledgeInterrupt: () => 0 },
    clock: { nowNs: () => (ns += 1000) },
    tscHz: 1e9,
    technique,
    btHotThreshold: 1,
  });
  const cpu = soft.cpu;
  memory.write(BOOT, boot);
  const gdt: [number, number][] = [
    [0, 0],
    flat(0x9a), // 0x08 ring-0 code
    flat(0x92), // 0x10 ring-0 data
    flat(0xfa), // 0x1b ring-3 code
    flat(0xf2), // 0x23 ring-3 data
    [(TSS << 16) | 0x67, 0x00008900 | ((TSS >>> 16) & 0xff)], // 0x28 32-bit TSS, available
  ];
  gdt.forEach(([lo, hi], i) => {
    memory.writeU32(GDT + 8 * i, lo >>> 0);
    memory.writeU32(GDT + 8 * i + 4, hi >>> 0);
  });
  for (let v = 0; v < 32; v++) {
    const target = STUBS + 16 * v;
    // 32-bit interrupt gate, DPL 0, selector 0x08 (SDM vol. 3 fig. 6-2).
    memory.writeU32(IDT + 8 * v, ((0x08 << 16) | (target & 0xffff)) >>> 0);
    // INT3 and INTO are callable from ring 3 (DPL 3), as in Linux; the others DPL 0.
    const dpl = v === 3 || v === 4 ? 0x6000 : 0;
    memory.writeU32(IDT + 8 * v + 4, ((target & 0xffff0000) | 0x8e00 | dpl) >>> 0);
  }
  memory.writeU32(TSS + 4, RING0_STACK);
  memory.writeU32(TSS + 8, 0x10);
  memory.writeU16(TSS + 0x66, 0x68);
  // Identity paging of 0-8 MiB; only LAYOUT.code .. LAYOUT.stackTop is user-accessible, as
  // under the KVM oracle and in a host process (other ring-3 accesses take #PF).
  memory.writeU32(PD, PT | 7);
  memory.writeU32(PD + 4, (PT + 0x1000) | 7);
  for (let i = 0; i < 2048; i++) {
    const page = i << 12;
    const user = page >= LAYOUT.code && page < LAYOUT.stackTop ? 4 : 0;
    memory.writeU32(PT + 4 * i, page | user | 3);
  }
  soft.loadEntryState(flatEntry(BOOT));
  return { soft, cpu, memory };
}

/**
 * The CPU under test, with one technique: "interp" is named `soft` (the reference every other
 * runner is compared with), "bt" `soft-bt`.
 */
export class SoftRunner implements SnippetRunner {
  readonly name: string;
  readonly kind = "tested";
  private boot: Uint8Array | undefined;

  constructor(readonly technique: SoftTechnique = DEFAULT_SOFT_TECHNIQUE) {
    this.name = technique === "interp" ? "soft" : `soft-${technique}`;
  }

  async unavailable(): Promise<string | null> {
    return nasmUnavailable();
  }

  async run(input: SnippetInput): Promise<SnippetResult> {
    this.boot ??= assemble(bootSource());
    const { soft, cpu, memory } = buildSoftMachine(this.boot, this.technique);
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
    for (const [i, r] of REG_NAMES.entries()) memory.writeU32(INIT + 4 * i, regs[r] >>> 0);
    // The KVM oracle's contract: only the arithmetic flags and DF are taken; IF = 0, IOPL = 0.
    memory.writeU32(INIT + 32, ((input.eflags ?? 0) & 0xcd5) | 2);
    memory.write(LAYOUT.code, input.code);
    memory.write(LAYOUT.data, input.data ?? new Uint8Array(DATA_SIZE));
    const stop = soft.run(2_000_000);
    if (stop.kind !== "halted") {
      const detail =
        stop.kind === "shutdown" || stop.kind === "unimplemented"
          ? `${stop.kind}: ${stop.report}`
          : stop.kind;
      throw new Error(`soft CPU (${this.technique}) did not reach an exception stub: ${detail}`);
    }
    const sp = cpu.regs[4]! >>> 0;
    const frame = (k: number) => memory.readU32(sp + 4 * k);
    if (frame(3) !== 0x1b)
      throw new Error(`exception ${frame(0)} in the ring-0 bootstrap at 0x${frame(2).toString(16)}`);
    const out: Regs = { eax: 0, ecx: 0, edx: 0, ebx: 0, esp: 0, ebp: 0, esi: 0, edi: 0 };
    REG_NAMES.forEach((r, i) => {
      out[r] = cpu.regs[i]! >>> 0;
    });
    out.esp = frame(5);
    return {
      regs: out,
      eflags: frame(4),
      eip: frame(2),
      vector: frame(0),
      errorCode: frame(1),
      cr2: cpu.cr2 >>> 0,
      data: memory.slice(LAYOUT.data, DATA_SIZE).slice(),
    };
  }
}
