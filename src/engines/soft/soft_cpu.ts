/**
 * The software x86 CPU engine: the run loop over decoded-instruction records cached by physical
 * address, interrupt acceptance between slices, exception delivery (with double and triple
 * fault), and the stop reasons the machine's run loop switches over.
 */
import type { EntryState, SegmentState } from "../../boot/entry_state.js";
import type { MmioBus } from "../../bus/mmio_bus.js";
import type { PortBus } from "../../bus/port_bus.js";
import type { InterruptSource, VirtualClock } from "../../devices/interrupt_source.js";
import type { GuestMemory } from "../../memory/guest_memory.js";
import { CPU_FAULT, CPU_UNIMPLEMENTED, Cpu } from "./cpu.js";
import { decode } from "./decoder.js";
import type { Handler, Insn } from "./insn.js";
import * as A from "./insn_alu.js";
import * as C from "./insn_control.js";
import { fpuFailure } from "./insn_system.js";
import { Cr0, Flag, Reg, Seg, Vec } from "./registers.js";
import { deliverInterrupt, TASK_SWITCH } from "./segmentation.js";
import { type BtStats, emptyBtStats } from "./bt/bt_stats.js";
import { Translator } from "./bt/translator.js";
import { DEFAULT_SOFT_TECHNIQUE, type SoftTechnique } from "./technique.js";

export type SoftStop =
  | { kind: "budget" }
  /** HLT with IF=1: the caller waits for the next timer deadline, then runs again. */
  | { kind: "halted" }
  /** Triple fault, HLT with IF=0 and nothing pending, or an unsupported task switch. */
  | { kind: "shutdown"; reason: string; report: string }
  | { kind: "unimplemented"; bytes: number[]; address: number; mode: string; report: string };

export interface SoftCpuOptions {
  /** How guest code runs: the interpreter (the reference) or the binary translator (bt/). */
  technique?: SoftTechnique;
  /**
   * Technique bt: entries of a block before it is compiled (bt/translator.ts HOT_THRESHOLD);
   * tests set 1 to compile everything they run.
   */
  btHotThreshold?: number;
  memory: GuestMemory;
  ports: PortBus;
  mmio: MmioBus;
  interrupts: InterruptSource;
  clock: VirtualClock;
  tscHz: number;
  /** Called between slices (every few thousand instructions) so devices can fire timers. */
  poll?: () => void;
  /** CPUID advertises a local APIC (default true). */
  apic?: boolean;
  /**
   * MSRs owned by the platform (IA32_APIC_BASE, IA32_TSC_DEADLINE, ...): tried before the CPU's
   * own; `readMsr` returns undefined and `writeMsr` false for an MSR that is not theirs.
   */
  platformMsrs?: {
    readMsr(index: number): bigint | undefined;
    writeMsr(index: number, value: bigint): boolean;
  };
  /** The NMI pin (local APIC LINT1 / NMI IPIs); taken between slices whatever EFLAGS.IF says. */
  nmi?: { hasNmi(): boolean; acknowledgeNmi(): void };
}

/**
 * The most frequent handlers (from profiles of a Linux boot), called from a switch in the
 * interpreter loop: a direct call (which V8 may inline) instead of an indirect one through the
 * record. Index 0 is "not hot". The order must match the switch in `execute`.
 */
const HOT_HANDLERS = new Map<Handler, number>([
  [A.mov_r32_rm32, 1],
  [A.mov_rm32_r32, 2],
  [A.alu_rm32_r32, 3],
  [C.jcc, 4],
  [A.alu_r32_rm32, 5],
  [A.alu_rm32_imm, 6],
  [A.lea, 7],
  [A.movzx_r32_rm8, 8],
  [A.movzx_r32_rm16, 9],
  [A.shift_rm32_imm, 10],
  [C.push_r32, 11],
  [C.pop_r32, 12],
  [A.incdec_r32, 13],
  [C.jmp_rel, 14],
  [A.mov_r_imm, 15],
  [A.test_rm_r, 16],
]);

/** Instructions between interrupt checks and device polls. */
const SLICE = 2048;
const RECENT = 32;

export class SoftCpu {
  readonly cpu: Cpu;
  readonly stats = {
    instructions: 0,
    exceptionsByVector: new Array<number>(32).fill(0),
    interruptsByVector: new Array<number>(256).fill(0),
    /** The binary translator's counters (technique bt only). */
    bt: undefined as BtStats | undefined,
  };
  readonly technique: SoftTechnique;
  /** The binary translator (technique bt). */
  readonly translator: Translator | undefined;
  private readonly interrupts: InterruptSource;
  private readonly poll: (() => void) | undefined;
  private readonly nmi: SoftCpuOptions["nmi"];
  /** Linear addresses of the last instructions started (ring), for crash reports. */
  private readonly recent = new Int32Array(RECENT);
  private recentIndex = 0;

  constructor(opts: SoftCpuOptions) {
    this.cpu = new Cpu(opts.memory, opts.ports, opts.mmio);
    this.technique = opts.technique ?? DEFAULT_SOFT_TECHNIQUE;
    if (this.technique === "bt") {
      this.stats.bt = emptyBtStats();
      this.translator = new Translator(this.cpu, undefined, opts.btHotThreshold);
    }
    this.interrupts = opts.interrupts;
    this.poll = opts.poll;
    this.nmi = opts.nmi;
    if (opts.platformMsrs !== undefined) this.cpu.platformMsrs = opts.platformMsrs;
    const clock = opts.clock;
    this.cpu.clockNs = () => clock.nowNs();
    this.cpu.tscHz = opts.tscHz;
    this.cpu.cpuidApic = opts.apic ?? true;
  }

  /** Loads the register state of a kernel entry point (boot/ computes it). */
  loadEntryState(s: EntryState): void {
    if (s.mode !== "protected32") throw new Error(`the software CPU cannot enter ${s.mode} mode`);
    const c = this.cpu;
    c.regs.fill(0);
    c.regs[Reg.ESI] = s.rsi;
    c.regs[Reg.ESP] = s.rsp;
    c.eip = s.rip;
    c.cr0 = s.cr0 | Cr0.ET;
    c.cr3 = s.cr3;
    c.cr4 = s.cr4;
    c.flags = (s.rflags | Flag.FIXED) & 0x3f7fd7;
    c.lop = 0;
    const load = (i: number, st: SegmentState) => {
      c.segSel[i] = st.selector;
      c.segBase[i] = st.base;
      c.segLimit[i] = st.limit;
      c.segAttr[i] =
        (st.type & 0xf) |
        (st.s ? 0x10 : 0) |
        ((st.dpl & 3) << 5) |
        (st.present ? 0x80 : 0) |
        (st.l ? 0x2000 : 0) |
        (st.db ? 0x4000 : 0) |
        (st.g ? 0x8000 : 0);
    };
    load(Seg.ES, s.es);
    load(Seg.CS, s.cs);
    load(Seg.SS, s.ss);
    load(Seg.DS, s.ds);
    load(Seg.FS, s.fs);
    load(Seg.GS, s.gs);
    load(Seg.TR, s.tr);
    load(Seg.LDTR, s.ldt);
    c.gdtBase = s.gdt.base;
    c.gdtLimit = s.gdt.limit;
    c.idtBase = s.idt.base;
    c.idtLimit = s.idt.limit;
    c.cpl = s.cs.dpl & 3;
    c.updateMode();
    c.flushTlb(true);
    c.halted = false;
  }

  /**
   * Runs up to `budget` instructions (fewer when the CPU halts or stops). Interrupts are taken,
   * and `poll` is called, between slices of at most SLICE instructions.
   */
  run(budget: number): SoftStop {
    const c = this.cpu;
    const start = c.instructions;
    while (c.instructions - start < budget) {
      if (this.poll !== undefined) this.poll();
      if (c.interruptShadow) {
        c.interruptShadow = false;
        c.slice = 1;
      } else {
        if (this.nmi?.hasNmi() === true && !c.nmiBlocked) {
          this.nmi.acknowledgeNmi();
          c.halted = false;
          c.nmiBlocked = true; // until the next IRET (SDM vol. 3 ch. 6.7.1)
          this.stats.interruptsByVector[Vec.NMI]!++;
          const stop = this.deliver(Vec.NMI, false, -1);
          if (stop !== undefined) return stop;
        }
        if ((c.flags & Flag.IF) !== 0 && this.interrupts.hasInterrupt()) {
          const vector = this.interrupts.acknowledgeInterrupt();
          this.stats.interruptsByVector[vector & 0xff]!++;
          c.halted = false;
          const stop = this.deliver(vector, false, -1);
          if (stop !== undefined) return stop;
        }
        if (c.halted) {
          if ((c.flags & Flag.IF) !== 0) return this.finish(start, { kind: "halted" });
          return this.finish(start, {
            kind: "shutdown",
            reason: "HLT with interrupts disabled",
            report: this.dumpState(),
          });
        }
        c.slice = Math.min(SLICE, budget - (c.instructions - start));
      }
      // EFLAGS.TF: one instruction, then a single-step #DB trap (SDM vol. 3 ch. 17.3.1.4).
      const singleStep = (c.flags & Flag.TF) !== 0;
      if (singleStep) c.slice = 1;
      try {
        this.execute();
        if (singleStep) {
          c.dr[6] = c.dr[6]! | 0x4000; // DR6.BS
          const stop = this.deliver(Vec.DB, true, -1);
          if (stop !== undefined) return this.finish(start, stop);
        }
      } catch (e) {
        if (e === CPU_FAULT) {
          c.eip = c.startEip;
          const stop = this.deliver(c.faultVector, true, c.faultHasCode ? c.faultCode : -1);
          if (stop !== undefined) return this.finish(start, stop);
        } else if (e === CPU_UNIMPLEMENTED) {
          c.eip = c.startEip;
          return this.finish(start, this.unimplemented());
        } else if (e === TASK_SWITCH) {
          c.eip = c.startEip;
          return this.finish(start, { kind: "shutdown", reason: c.shutdownReason, report: this.dumpState() });
        } else {
          c.eip = c.startEip;
          const message = e instanceof Error ? (e.stack ?? e.message) : String(e);
          return this.finish(start, {
            kind: "shutdown",
            reason: `internal error in the software CPU: ${message}`,
            report: this.dumpState(),
          });
        }
      }
    }
    return this.finish(start, { kind: "budget" });
  }

  private finish(_start: number, stop: SoftStop): SoftStop {
    this.stats.instructions = this.cpu.instructions;
    if (this.translator !== undefined && this.stats.bt !== undefined)
      this.translator.syncStats(this.stats.bt);
    return stop;
  }

  /**
   * The interpreter loop: run the decoded record for EIP, advance EIP, call its handler. Records
   * inside one page are chained: each remembers its fall-through successor (`next`) and its last
   * taken branch target (`jump`), so loops and straight-line code skip the lookup. Every chain is
   * dropped when the fetch page is reset (TLB flush, mode or CS change, a write to a code page).
   * With the translator (technique bt), each block entry (after an instruction that ends a block,
   * or a compiled block) runs the compiled block of the record there, or counts towards compiling
   * one (bt/translator.ts).
   */
  private execute(): void {
    const c = this.cpu;
    const bt = this.translator;
    let insn: Insn | undefined;
    let prev: Insn | undefined;
    let prevNext = 0;
    let entry = true;
    while (c.slice > 0) {
      const eip = c.eip;
      c.startEip = eip;
      if (insn === undefined) {
        const linear = (c.segBase[Seg.CS]! + eip) | 0;
        this.recent[this.recentIndex++ & (RECENT - 1)] = linear;
        const samePage = linear >>> 12 === c.fetchLinPage;
        insn = samePage ? c.fetchCache![linear & 0xfff] : this.fetchPage(linear);
        if (insn === undefined || insn.cs32 !== c.cs32) insn = this.decodeAt(linear);
        // Link the previous record to this one when both are cached records of this page.
        if (samePage && prev !== undefined && c.fetchCache![linear & 0xfff] === insn) {
          if (eip === prevNext) prev.next = insn;
          else {
            prev.jump = insn;
            prev.jumpEip = eip;
          }
        }
      }
      if (entry && bt !== undefined) {
        entry = false;
        const fn = insn.btFn;
        if (fn !== undefined) {
          if (insn.btMode === bt.mode() && insn.btCount <= c.slice) {
            bt.executions++;
            const n0 = c.instructions;
            fn();
            bt.translatedInsns += c.instructions - n0;
            prev = undefined;
            insn = undefined;
            entry = true;
            continue;
          }
        } else if (insn.btHits >= 0 && ++insn.btHits >= bt.threshold && c.fetchLinPage !== -1) {
          // Compiled: go round to run it (if it fits the slice). Not compiled (an instruction
          // crossing the page end, whose record is not even cached): interpret it now.
          bt.compile(insn);
          if (insn.btFn !== undefined) {
            entry = true;
            continue;
          }
        }
      }
      c.slice--;
      const next = c.cs32 ? (eip + insn.len) | 0 : (eip + insn.len) & 0xffff;
      c.eip = next;
      switch (insn.hot) {
        case 1:
          A.mov_r32_rm32(c, insn);
          break;
        case 2:
          A.mov_rm32_r32(c, insn);
          break;
        case 3:
          A.alu_rm32_r32(c, insn);
          break;
        case 4:
          C.jcc(c, insn);
          break;
        case 5:
          A.alu_r32_rm32(c, insn);
          break;
        case 6:
          A.alu_rm32_imm(c, insn);
          break;
        case 7:
          A.lea(c, insn);
          break;
        case 8:
          A.movzx_r32_rm8(c, insn);
          break;
        case 9:
          A.movzx_r32_rm16(c, insn);
          break;
        case 10:
          A.shift_rm32_imm(c, insn);
          break;
        case 11:
          C.push_r32(c, insn);
          break;
        case 12:
          C.pop_r32(c, insn);
          break;
        case 13:
          A.incdec_r32(c, insn);
          break;
        case 14:
          C.jmp_rel(c, insn);
          break;
        case 15:
          A.mov_r_imm(c, insn);
          break;
        case 16:
          A.test_rm_r(c, insn);
          break;
        default:
          insn.handler(c, insn);
      }
      c.instructions++;
      if (insn.blockEnd) entry = true;
      if (c.fetchLinPage === -1) {
        prev = undefined;
        insn = undefined;
        continue;
      }
      prev = insn;
      prevNext = next;
      const e = c.eip;
      if (e === next) insn = insn.next;
      else if (e === insn.jumpEip && insn.jump !== undefined) insn = insn.jump;
      else insn = undefined;
    }
  }

  /** Translates the page of `linear` for execution and makes it the fetch page. */
  private fetchPage(linear: number): Insn | undefined {
    const c = this.cpu;
    const phys = c.physForRead(linear);
    const page = phys >>> 12;
    if (phys >= c.ramSize) {
      c.fetchLinPage = -1;
      return undefined;
    }
    let cache = c.codeCache[page];
    if (cache === undefined) {
      cache = new Array<Insn>(4096);
      c.codeCache[page] = cache;
      c.codePage[page] = 1;
    }
    c.fetchLinPage = linear >>> 12;
    c.fetchPhysPage = page;
    c.fetchCache = cache;
    return cache[linear & 0xfff];
  }

  private decodeAt(linear: number): Insn {
    const c = this.cpu;
    const insn = decode(c, linear);
    insn.hot = HOT_HANDLERS.get(insn.handler) ?? 0;
    c.decodes++;
    // Cache only instructions inside one page of RAM (a write to the page drops them).
    if ((linear & 0xfff) + insn.len <= 0x1000 && linear >>> 12 === c.fetchLinPage) {
      c.fetchCache![linear & 0xfff] = insn;
    }
    return insn;
  }

  /**
   * Delivers an interrupt or exception; a fault while delivering becomes #DF, and one while
   * delivering #DF shuts the machine down (triple fault), as SDM vol. 3 ch. 6.15 describes.
   */
  private deliver(vector: number, exception: boolean, code: number): SoftStop | undefined {
    const c = this.cpu;
    if (exception) this.stats.exceptionsByVector[vector & 31]!++;
    let v = vector;
    let err = code;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        // Faults push RF=1; #DB and #BP/#OF (traps) do not reach here with exception=true except #DB.
        deliverInterrupt(c, v, false, err, exception && v !== Vec.DB);
        return undefined;
      } catch (e) {
        if (e === TASK_SWITCH)
          return { kind: "shutdown", reason: c.shutdownReason, report: this.dumpState() };
        if (e !== CPU_FAULT) throw e;
        if (v === Vec.DF) break;
        this.stats.exceptionsByVector[c.faultVector & 31]!++;
        v = Vec.DF;
        err = 0;
      }
    }
    return {
      kind: "shutdown",
      reason: `triple fault (exception ${vector} could not be delivered)`,
      report: this.dumpState(),
    };
  }

  private unimplemented(): SoftStop {
    const c = this.cpu;
    const address = (c.segBase[Seg.CS]! + c.eip) | 0;
    const bytes: number[] = [];
    for (let k = 0; k < 15; k++) {
      try {
        bytes.push(c.read8((address + k) | 0));
      } catch {
        break;
      }
    }
    const mode = `${c.protectedMode ? "protected" : "real"} mode, ${c.cs32 ? 32 : 16}-bit code, CPL ${c.cpl}${
      (c.cr0 & Cr0.PG) !== 0 ? ", paging" : ""
    }`;
    const hex = bytes.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const extra =
      fpuFailure !== "" && bytes[0] !== undefined && bytes[0] >= 0xd8 && bytes[0] <= 0xdf
        ? ` (${fpuFailure})`
        : "";
    return {
      kind: "unimplemented",
      bytes,
      address: address >>> 0,
      mode,
      report: `unimplemented instruction at ${hex32(address)} (${mode}): ${hex}${extra}\n${this.dumpState()}`,
    };
  }

  /** Registers, segments, control registers and the last instructions, for crash reports. */
  dumpState(): string {
    const c = this.cpu;
    const r = (i: number) => hex32(c.regs[i]!);
    const lines = [
      `EAX=${r(0)} EBX=${r(3)} ECX=${r(1)} EDX=${r(2)} ESI=${r(6)} EDI=${r(7)} EBP=${r(5)} ESP=${r(4)}`,
      `EIP=${hex32(c.eip)} EFL=${hex32(c.getEflags())} CPL=${c.cpl} ${c.protectedMode ? "PM" : "RM"}${c.cs32 ? "32" : "16"}${c.halted ? " HLT" : ""}`,
    ];
    const names = ["ES", "CS", "SS", "DS", "FS", "GS", "LDT", "TR"];
    for (let s = 0; s < 8; s++) {
      lines.push(
        `${names[s]!.padEnd(3)}=${(c.segSel[s]! & 0xffff).toString(16).padStart(4, "0")} base=${hex32(c.segBase[s]!)} limit=${hex32(c.segLimit[s]!)} attr=${(c.segAttr[s]! & 0xffff).toString(16).padStart(4, "0")}`,
      );
    }
    lines.push(
      `GDT=${hex32(c.gdtBase)} ${c.gdtLimit.toString(16)}  IDT=${hex32(c.idtBase)} ${c.idtLimit.toString(16)}`,
    );
    lines.push(`CR0=${hex32(c.cr0)} CR2=${hex32(c.cr2)} CR3=${hex32(c.cr3)} CR4=${hex32(c.cr4)}`);
    lines.push(`instructions=${c.instructions} last exception=${c.faultVector} code=${hex32(c.faultCode)}`);
    const code: string[] = [];
    const saved = [c.cr2, c.faultVector, c.faultCode];
    for (let k = 0; k < 16; k++) {
      try {
        code.push(
          c
            .read8((c.segBase[Seg.CS]! + c.eip + k) | 0)
            .toString(16)
            .padStart(2, "0"),
        );
      } catch {
        break;
      }
    }
    [c.cr2, c.faultVector, c.faultCode] = saved as [number, number, number];
    lines.push(`code at EIP: ${code.join(" ")}`);
    const recent: string[] = [];
    for (let k = RECENT; k > 0; k--) recent.push(hex32(this.recent[(this.recentIndex - k) & (RECENT - 1)]!));
    lines.push(`last block entries (linear, oldest first): ${recent.join(" ")}`);
    return lines.join("\n");
  }
}

function hex32(v: number): string {
  return (v >>> 0).toString(16).padStart(8, "0");
}
