/**
 * The architectural state of the software x86 CPU and its memory path (segment base + software
 * TLB + 32-bit paging). Instruction handlers (`insn_*.ts`) operate on one `Cpu`; the run loop is in
 * `soft_cpu.ts`. Everything here is written for the hot loop: typed arrays, no allocation, faults
 * thrown as one preallocated sentinel.
 *
 * Precise exceptions: a fault throws `CPU_FAULT` before the faulting instruction commits its
 * register writes (handlers read and check memory first, then write registers), and the run loop
 * restores EIP (and ESP) to the values at the start of the instruction before delivering it.
 */
import type { MmioBus } from "../../bus/mmio_bus.js";
import type { PortBus } from "../../bus/port_bus.js";
import type { GuestMemory } from "../../memory/guest_memory.js";
import { Fpu } from "./fpu/fpu.js";
import type { Insn } from "./insn.js";
import type { SoftParavirt } from "./paravirt.js";
import { Cr0, Cr4, Flag, Pte, Reg, Seg, Vec } from "./registers.js";

/** The one object thrown for a CPU exception; vector and error code are on the `Cpu`. */
export const CPU_FAULT = { kind: "cpu-fault" } as const;
/** Thrown when the decoder meets an instruction this CPU does not implement. */
export const CPU_UNIMPLEMENTED = { kind: "cpu-unimplemented" } as const;

/** Kinds of the last flag-setting operation (lazy flags, after v86's last_op/last_result). */
export const enum Lazy {
  /** All six arithmetic flags are in `flags`. */
  NONE = 0,
  ADD = 1,
  SUB = 2,
  LOGIC = 3,
  /** INC/DEC: OF, AF as ADD/SUB; CF preserved in `flags`. */
  INC = 4,
  DEC = 5,
  /** CF, OF, AF in `flags`; ZF, SF, PF from the result. */
  OTHER = 6,
}

/** Software-TLB entry bits; the high 20 bits hold the physical page. */
export const enum Tlb {
  READ_SUP = 1,
  READ_USER = 2,
  WRITE_SUP = 4,
  WRITE_USER = 8,
  /** Physical page is guest RAM (not MMIO): the fast path may index `mem8` directly. */
  RAM = 16,
  GLOBAL = 32,
}

const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let b = i;
  b ^= b >> 4;
  b ^= b >> 2;
  b ^= b >> 1;
  PARITY[i] = (~b & 1) << 2;
}

/** Limit of the TLB fill list: beyond it a flush clears the whole table. */
const TLB_LIST_MAX = 4096;

export class Cpu {
  // ---- general registers: one buffer viewed as 32, 16 and 8-bit registers
  readonly regBuffer = new ArrayBuffer(32);
  readonly regs = new Int32Array(this.regBuffer);
  readonly regs16 = new Uint16Array(this.regBuffer);
  readonly regs8 = new Uint8Array(this.regBuffer);
  eip = 0;

  // ---- segments (ES CS SS DS FS GS LDTR TR): selector, base, limit, descriptor access bytes
  readonly segSel = new Int32Array(8);
  readonly segBase = new Int32Array(8);
  readonly segLimit = new Int32Array(8);
  /** Descriptor bits 40-55 (type, S, DPL, P, AVL, L, D/B, G) as loaded. */
  readonly segAttr = new Int32Array(8);
  gdtBase = 0;
  gdtLimit = 0;
  idtBase = 0;
  idtLimit = 0x3ff;
  cpl = 0;
  /** CS.D: default operand and address size 32. */
  cs32 = false;
  /** SS.B: stack pointer is ESP (true) or SP. */
  ss32 = false;
  /** CR0.PE and not virtual-8086: selectors are descriptors. */
  protectedMode = false;

  // ---- flags: `flags` holds every flag, the arithmetic six are valid only when lop is NONE
  flags = Flag.FIXED;
  lop: Lazy = Lazy.NONE;
  lsz = 32;
  la = 0;
  lb = 0;
  lr = 0;

  // ---- control, debug and model-specific registers
  cr0 = Cr0.ET;
  cr2 = 0;
  cr3 = 0;
  cr4 = 0;
  readonly dr = new Int32Array(8);
  readonly msrs = new Map<number, bigint>();
  sysenterCs = 0;
  sysenterEsp = 0;
  sysenterEip = 0;
  apicBase = 0xfee00900;
  /** TSC = virtual-clock nanoseconds * tscHz / 1e9 + tscOffset (WRMSR 0x10 moves the offset). */
  tscOffset = 0;
  tscHz = 1e9;
  clockNs: () => number = () => 0;
  /** Platform MSRs (APIC base, TSC deadline) consulted before the CPU's own. */
  platformMsrs:
    | { readMsr(index: number): bigint | undefined; writeMsr(index: number, value: bigint): boolean }
    | undefined = undefined;
  /** NMIs are blocked from NMI delivery until the next IRET. */
  nmiBlocked = false;
  /** CPUID feature switches for devices and units that exist (local APIC, FXSAVE). */
  cpuidApic = true;
  cpuidFxsr = true;
  /** The KVM paravirtual interface (paravirt.ts): CPUID 0x4000000x, kvmclock MSRs, VMCALL. */
  paravirt: SoftParavirt | undefined = undefined;

  // ---- execution state
  /** EIP and ESP at the start of the current instruction (restored when it faults). */
  startEip = 0;
  startEsp = 0;
  /** Instructions of the current slice still to run; handlers set it to 0 to end the slice early. */
  slice = 0;
  halted = false;
  /** Interrupts are inhibited for one instruction after STI / MOV SS / POP SS. */
  interruptShadow = false;
  faultVector = 0;
  faultCode = 0;
  faultHasCode = false;
  /** Set while delivering an exception, to turn a second one into #DF and a third into shutdown. */
  deliveringDepth = 0;
  instructions = 0;
  /** Decoder runs and code-page invalidations (self-modifying code, or code and data sharing a page). */
  decodes = 0;
  codeInvalidations = 0;
  shutdownReason = "";
  unimplementedBytes: number[] = [];
  unimplementedAddress = 0;

  // ---- memory
  readonly mem8: Uint8Array;
  readonly mem16: Uint16Array;
  readonly mem32: Int32Array;
  readonly ramSize: number;
  /** Software TLB: linear page -> physical page | Tlb bits (0 = empty). */
  readonly tlb = new Int32Array(1 << 20);
  private readonly tlbList = new Int32Array(TLB_LIST_MAX);
  private tlbCount = 0;
  private tlbOverflow = false;
  /** TLB bits a read / write at the current CPL needs (RAM included). */
  rcheck: number = Tlb.READ_SUP | Tlb.RAM;
  wcheck: number = Tlb.WRITE_SUP | Tlb.RAM;
  /** Decoded instructions by physical page, then by offset in the page. */
  readonly codeCache: (Insn[] | undefined)[];
  readonly codePage: Uint8Array;
  /** Fetch fast path: the linear page of EIP and its physical page + cache (or -1). */
  fetchLinPage = -1;
  fetchPhysPage = 0;
  fetchCache: Insn[] | undefined = undefined;
  /** Told of every code-page write, after the decoded records are dropped (the translator's blocks). */
  onCodeWrite: ((page: number) => void) | undefined = undefined;

  readonly ports: PortBus;
  readonly mmio: MmioBus;
  readonly fpu: Fpu;

  constructor(memory: GuestMemory, ports: PortBus, mmio: MmioBus) {
    const low = memory.descriptors.find((d) => d.base === 0);
    if (low === undefined || low.backing.kind !== "shared") {
      throw new Error("the software CPU needs guest RAM at physical address 0 on a SharedArrayBuffer");
    }
    this.ramSize = Math.min(low.size, 0xc000_0000) & ~0xfff;
    this.mem8 = new Uint8Array(low.backing.buffer, 0, this.ramSize);
    this.mem16 = new Uint16Array(low.backing.buffer, 0, this.ramSize >> 1);
    this.mem32 = new Int32Array(low.backing.buffer, 0, this.ramSize >> 2);
    this.codeCache = new Array(this.ramSize >>> 12).fill(undefined);
    this.codePage = new Uint8Array(this.ramSize >>> 12);
    this.ports = ports;
    this.mmio = mmio;
    this.fpu = new Fpu({
      getEflags: () => this.getEflags(),
      setAx: (v) => {
        this.regs16[0] = v;
      },
      setComiFlags: (f) => this.setArithFlags(f),
    });
    this.reset();
  }

  /** Power-on state (SDM vol. 3 table 9-1), real mode at F000:FFF0. */
  reset(): void {
    this.regs.fill(0);
    this.eip = 0xfff0;
    for (let s = 0; s < 8; s++) {
      this.segSel[s] = 0;
      this.segBase[s] = 0;
      this.segLimit[s] = 0xffff;
      this.segAttr[s] = 0x93;
    }
    this.segSel[Seg.CS] = 0xf000;
    this.segBase[Seg.CS] = 0xffff0000 | 0;
    this.segAttr[Seg.CS] = 0x9b;
    this.cr0 = Cr0.ET;
    this.cr3 = 0;
    this.cr4 = 0;
    this.flags = Flag.FIXED;
    this.lop = Lazy.NONE;
    this.updateMode();
    this.flushTlb(true);
  }

  // ======================================================================= lazy flags

  getCF(): number {
    switch (this.lop) {
      case Lazy.ADD:
        return (((this.la & this.lb) | ((this.la | this.lb) & ~this.lr)) >>> (this.lsz - 1)) & 1;
      case Lazy.SUB:
        return (((~this.la & this.lb) | ((~this.la | this.lb) & this.lr)) >>> (this.lsz - 1)) & 1;
      case Lazy.LOGIC:
        return 0;
      default:
        return this.flags & 1;
    }
  }
  getOF(): number {
    switch (this.lop) {
      case Lazy.ADD:
      case Lazy.INC:
        return (((this.la ^ this.lr) & (this.lb ^ this.lr)) >>> (this.lsz - 1)) & 1;
      case Lazy.SUB:
      case Lazy.DEC:
        return (((this.la ^ this.lb) & (this.la ^ this.lr)) >>> (this.lsz - 1)) & 1;
      case Lazy.LOGIC:
        return 0;
      default:
        return (this.flags >>> 11) & 1;
    }
  }
  getAF(): number {
    switch (this.lop) {
      case Lazy.ADD:
      case Lazy.SUB:
      case Lazy.INC:
      case Lazy.DEC:
        return ((this.la ^ this.lb ^ this.lr) >>> 4) & 1;
      case Lazy.LOGIC:
        return 0;
      default:
        return (this.flags >>> 4) & 1;
    }
  }
  getZF(): number {
    if (this.lop === Lazy.NONE) return (this.flags >>> 6) & 1;
    return this.lr << (32 - this.lsz) === 0 ? 1 : 0;
  }
  getSF(): number {
    if (this.lop === Lazy.NONE) return (this.flags >>> 7) & 1;
    return (this.lr >>> (this.lsz - 1)) & 1;
  }
  getPF(): number {
    if (this.lop === Lazy.NONE) return (this.flags >>> 2) & 1;
    return PARITY[this.lr & 0xff]! >> 2;
  }

  /** EFLAGS as the guest sees it (PUSHF, interrupts). */
  getEflags(): number {
    if (this.lop === Lazy.NONE) return this.flags;
    return (
      (this.flags & ~Flag.ARITH) |
      this.getCF() |
      (PARITY[this.lr & 0xff]! & 4) |
      (this.getAF() << 4) |
      (this.getZF() << 6) |
      (this.getSF() << 7) |
      (this.getOF() << 11)
    );
  }

  /** Writes the six arithmetic flags from `value` (other flags unchanged). */
  setArithFlags(value: number): void {
    const f = this.getEflags();
    this.flags = (f & ~Flag.ARITH) | (value & Flag.ARITH);
    this.lop = Lazy.NONE;
  }

  /** Materializes the arithmetic flags so single bits can be edited in `flags`. */
  materializeFlags(): void {
    if (this.lop !== Lazy.NONE) {
      this.flags = this.getEflags();
      this.lop = Lazy.NONE;
    }
  }

  /** Result of an operation whose CF/OF (and AF) the caller computed: ZF, SF, PF from `result`. */
  setFlagsOther(result: number, size: number, cf: number, of: number): void {
    this.flags = (this.flags & ~(Flag.CF | Flag.OF | Flag.AF)) | cf | (of << 11);
    this.lop = Lazy.OTHER;
    this.lr = result;
    this.lsz = size;
  }

  /** Jcc / SETcc / CMOVcc condition `cc` (SDM vol. 1 appendix B). */
  cond(cc: number): boolean {
    let r: number;
    // Fast path after CMP/SUB without a borrow in (the usual Jcc): compare the operands directly,
    // left-aligned so the same comparisons serve 8, 16 and 32 bits.
    if (this.lop === Lazy.SUB && ((this.la - this.lb) | 0) === this.lr) {
      const sh = 32 - this.lsz;
      const a = this.la << sh;
      const b = this.lb << sh;
      switch (cc >> 1) {
        case 1:
          return a >>> 0 < b >>> 0 !== ((cc & 1) !== 0);
        case 2:
          return (a === b) !== ((cc & 1) !== 0);
        case 3:
          return a >>> 0 <= b >>> 0 !== ((cc & 1) !== 0);
        case 6:
          return a < b !== ((cc & 1) !== 0);
        case 7:
          return a <= b !== ((cc & 1) !== 0);
        default:
          break;
      }
    }
    switch (cc >> 1) {
      case 0:
        r = this.getOF();
        break;
      case 1:
        r = this.getCF();
        break;
      case 2:
        r = this.getZF();
        break;
      case 3:
        r = this.getCF() | this.getZF();
        break;
      case 4:
        r = this.getSF();
        break;
      case 5:
        r = this.getPF();
        break;
      case 6:
        r = this.getSF() ^ this.getOF();
        break;
      default:
        r = this.getZF() | (this.getSF() ^ this.getOF());
        break;
    }
    return (r ^ (cc & 1)) !== 0;
  }

  // ======================================================================= faults

  /** Raises exception `vector` (with an error code when `code` >= 0). Never returns. */
  fault(vector: number, code = -1): never {
    this.faultVector = vector;
    this.faultHasCode = code >= 0;
    this.faultCode = Math.max(code, 0);
    throw CPU_FAULT;
  }
  gp(code = 0): never {
    return this.fault(Vec.GP, code);
  }
  ud(): never {
    return this.fault(Vec.UD);
  }

  // ======================================================================= modes

  /** Recomputes cached mode bits after a change of CR0, CS, SS or EFLAGS.VM. */
  updateMode(): void {
    this.protectedMode = (this.cr0 & Cr0.PE) !== 0 && (this.flags & Flag.VM) === 0;
    this.cs32 = this.protectedMode && (this.segAttr[Seg.CS]! & 0x4000) !== 0;
    this.ss32 = this.protectedMode && (this.segAttr[Seg.SS]! & 0x4000) !== 0;
    if (!this.protectedMode) this.cpl = (this.flags & Flag.VM) !== 0 ? 3 : 0;
    this.rcheck = this.cpl === 3 ? Tlb.READ_USER | Tlb.RAM : Tlb.READ_SUP | Tlb.RAM;
    this.wcheck = this.cpl === 3 ? Tlb.WRITE_USER | Tlb.RAM : Tlb.WRITE_SUP | Tlb.RAM;
    this.fetchLinPage = -1;
  }

  // ======================================================================= TLB and paging

  /** Drops TLB entries (all, or all but global pages when `keepGlobal` and CR4.PGE). */
  flushTlb(all: boolean): void {
    this.fetchLinPage = -1;
    if (this.tlbOverflow) {
      this.tlb.fill(0);
      this.tlbCount = 0;
      this.tlbOverflow = false;
      return;
    }
    const keepGlobal = !all && (this.cr4 & Cr4.PGE) !== 0;
    let kept = 0;
    for (let i = 0; i < this.tlbCount; i++) {
      const page = this.tlbList[i]!;
      const e = this.tlb[page]!;
      if (keepGlobal && (e & Tlb.GLOBAL) !== 0) this.tlbList[kept++] = page;
      else this.tlb[page] = 0;
    }
    this.tlbCount = kept;
  }

  invlpg(linear: number): void {
    this.tlb[linear >>> 12] = 0;
    this.fetchLinPage = -1;
  }

  /**
   * Translates `linear` for an access (write: bit 1, user: bit 2 as in the #PF error code),
   * fills the TLB, and returns the physical address. Raises #PF with CR2 on failure
   * (SDM vol. 3 ch. 4.3, 4.7). `user` is the privilege of the access, not always CPL.
   */
  translate(linear: number, write: boolean, user: boolean): number {
    linear >>>= 0;
    const page = linear >>> 12;
    if ((this.cr0 & Cr0.PG) === 0) {
      // Unsigned: a linear address above 2 GiB is a physical address above 2 GiB, not RAM.
      const phys = (linear & ~0xfff) >>> 0;
      this.tlbFill(
        page,
        phys |
          Tlb.READ_SUP |
          Tlb.READ_USER |
          Tlb.WRITE_SUP |
          Tlb.WRITE_USER |
          (phys < this.ramSize ? Tlb.RAM : 0),
      );
      return linear;
    }
    const errUser = user ? 4 : 0;
    const errWrite = write ? 2 : 0;
    const pae = (this.cr4 & Cr4.PAE) !== 0;
    // PAE (SDM vol. 3 ch. 4.4): a 4-entry PDPT at CR3, 8-byte entries, 2 MiB large pages. Only the
    // low 32 bits of an entry are used: guest RAM is below 4 GiB and NX is not offered.
    let pdeAddr: number;
    if (pae) {
      const pdpteAddr = ((this.cr3 & ~0x1f) + ((linear >>> 30) << 3)) >>> 0;
      const pdpte = this.physRead32(pdpteAddr);
      if ((pdpte & Pte.P) === 0) this.pageFault(linear, errUser | errWrite);
      pdeAddr = ((pdpte & ~0xfff) + (((linear >>> 21) & 0x1ff) << 3)) >>> 0;
    } else pdeAddr = ((this.cr3 & ~0xfff) + ((linear >>> 22) << 2)) >>> 0;
    const pde = this.physRead32(pdeAddr);
    if ((pde & Pte.P) === 0) this.pageFault(linear, errUser | errWrite);
    let pte: number;
    let pteAddr: number;
    let frame: number;
    let effUser: boolean;
    let effWrite: boolean;
    if ((pde & Pte.PS) !== 0 && (pae || (this.cr4 & Cr4.PSE) !== 0)) {
      pte = pde;
      pteAddr = pdeAddr;
      frame = pae
        ? ((pde & 0xffe00000) | (linear & 0x1ff000)) >>> 0
        : ((pde & 0xffc00000) | (linear & 0x3ff000)) >>> 0;
      effUser = (pde & Pte.US) !== 0;
      effWrite = (pde & Pte.RW) !== 0;
    } else {
      pteAddr = pae
        ? ((pde & ~0xfff) + (((linear >>> 12) & 0x1ff) << 3)) >>> 0
        : ((pde & ~0xfff) + (((linear >>> 12) & 0x3ff) << 2)) >>> 0;
      pte = this.physRead32(pteAddr);
      if ((pte & Pte.P) === 0) this.pageFault(linear, errUser | errWrite);
      frame = (pte & ~0xfff) >>> 0;
      effUser = (pde & pte & Pte.US) !== 0;
      effWrite = (pde & pte & Pte.RW) !== 0;
      if ((pde & Pte.A) === 0) this.physWrite32(pdeAddr, pde | Pte.A);
    }
    const global = (pte & Pte.G) !== 0 && (this.cr4 & Cr4.PGE) !== 0;
    const wp = (this.cr0 & Cr0.WP) !== 0;
    if (user && !effUser) this.pageFault(linear, 1 | errUser | errWrite);
    if (write && !effWrite && (user || wp)) this.pageFault(linear, 1 | errUser | errWrite);
    const dirty = (pte & Pte.D) !== 0 || write;
    const newPte = pte | Pte.A | (write ? Pte.D : 0);
    if (newPte !== pte) this.physWrite32(pteAddr, newPte);
    let bits = Tlb.READ_SUP;
    if (effUser) bits |= Tlb.READ_USER;
    if (dirty) {
      if (effWrite || !wp) bits |= Tlb.WRITE_SUP;
      if (effWrite && effUser) bits |= Tlb.WRITE_USER;
    }
    if (global) bits |= Tlb.GLOBAL;
    if (frame < this.ramSize) bits |= Tlb.RAM;
    this.tlbFill(page, frame | bits);
    return (frame | (linear & 0xfff)) >>> 0;
  }

  private tlbFill(page: number, entry: number): void {
    if (this.tlb[page] === 0) {
      if (this.tlbCount < TLB_LIST_MAX) this.tlbList[this.tlbCount++] = page;
      else this.tlbOverflow = true;
    }
    this.tlb[page] = entry;
  }

  private pageFault(linear: number, code: number): never {
    this.cr2 = linear | 0;
    return this.fault(Vec.PF, code);
  }

  /** Physical address of a read of `linear` at the current privilege (fills the TLB). */
  physForRead(linear: number): number {
    const e = this.tlb[linear >>> 12]!;
    if ((e & (this.rcheck & ~Tlb.RAM)) !== 0) return ((e & ~0xfff) | (linear & 0xfff)) >>> 0;
    return this.translate(linear, false, this.cpl === 3);
  }
  physForWrite(linear: number): number {
    const e = this.tlb[linear >>> 12]!;
    if ((e & (this.wcheck & ~Tlb.RAM)) !== 0) return ((e & ~0xfff) | (linear & 0xfff)) >>> 0;
    return this.translate(linear, true, this.cpl === 3);
  }

  // ---- physical access (RAM or MMIO), used by the page walker and slow paths
  physRead8(p: number): number {
    if (p < this.ramSize) return this.mem8[p]!;
    return this.mmio.read(p, 1);
  }
  physRead16(p: number): number {
    if (p + 1 < this.ramSize) return this.mem8[p]! | (this.mem8[p + 1]! << 8);
    return this.mmio.read(p, 2);
  }
  physRead32(p: number): number {
    if (p + 3 < this.ramSize) {
      if ((p & 3) === 0) return this.mem32[p >>> 2]!;
      return this.mem8[p]! | (this.mem8[p + 1]! << 8) | (this.mem8[p + 2]! << 16) | (this.mem8[p + 3]! << 24);
    }
    return this.mmio.read(p, 4) | 0;
  }
  physWrite8(p: number, v: number): void {
    if (p < this.ramSize) {
      if (this.codePage[p >>> 12] !== 0) this.invalidateCode(p);
      this.mem8[p] = v;
    } else this.mmio.write(p, 1, v & 0xff);
  }
  physWrite16(p: number, v: number): void {
    if (p + 1 < this.ramSize) {
      if (this.codePage[p >>> 12] !== 0) this.invalidateCode(p);
      this.mem8[p] = v;
      this.mem8[p + 1] = v >> 8;
    } else this.mmio.write(p, 2, v & 0xffff);
  }
  physWrite32(p: number, v: number): void {
    if (p + 3 < this.ramSize) {
      if (this.codePage[p >>> 12] !== 0) this.invalidateCode(p);
      if ((p & 3) === 0) this.mem32[p >>> 2] = v;
      else {
        this.mem8[p] = v;
        this.mem8[p + 1] = v >> 8;
        this.mem8[p + 2] = v >> 16;
        this.mem8[p + 3] = v >> 24;
      }
    } else this.mmio.write(p, 4, v >>> 0);
  }

  /** A write reached a page holding decoded instructions: drop them (self-modifying code). */
  invalidateCode(p: number): void {
    const page = p >>> 12;
    this.codeInvalidations++;
    this.codePage[page] = 0;
    this.codeCache[page] = undefined;
    this.onCodeWrite?.(page);
    // Any running chain of records may include this page: make the loop look up again.
    this.fetchLinPage = -1;
  }

  // ---- linear access at the current privilege (the fast path every instruction uses)
  read8(lin: number): number {
    const e = this.tlb[lin >>> 12]!;
    if ((e & this.rcheck) === this.rcheck) return this.mem8[(e & ~0xfff) | (lin & 0xfff)]!;
    return this.physRead8(this.translate(lin, false, this.cpl === 3));
  }
  read16(lin: number): number {
    const e = this.tlb[lin >>> 12]!;
    if ((e & this.rcheck) === this.rcheck && (lin & 0xfff) !== 0xfff) {
      const p = (e & ~0xfff) | (lin & 0xfff);
      if ((p & 1) === 0) return this.mem16[p >>> 1]!;
      return this.mem8[p]! | (this.mem8[p + 1]! << 8);
    }
    return this.read16Slow(lin);
  }
  read32(lin: number): number {
    const e = this.tlb[lin >>> 12]!;
    if ((e & this.rcheck) === this.rcheck && (lin & 0xfff) <= 0xffc) {
      const p = (e & ~0xfff) | (lin & 0xfff);
      if ((p & 3) === 0) return this.mem32[p >>> 2]!;
      return this.mem8[p]! | (this.mem8[p + 1]! << 8) | (this.mem8[p + 2]! << 16) | (this.mem8[p + 3]! << 24);
    }
    return this.read32Slow(lin);
  }
  private read16Slow(lin: number): number {
    if ((lin & 0xfff) === 0xfff) return this.read8(lin) | (this.read8(lin + 1) << 8);
    return this.physRead16(this.translate(lin, false, this.cpl === 3));
  }
  private read32Slow(lin: number): number {
    if ((lin & 0xfff) > 0xffc) {
      const lo = this.physForRead(lin);
      const hi = this.physForRead((lin + 3) | 0);
      let v = 0;
      for (let k = 3; k >= 0; k--) {
        const a = (lin + k) | 0;
        const p = ((a ^ lin) & ~0xfff) === 0 ? lo + k : ((hi & ~0xfff) | (a & 0xfff)) >>> 0;
        v = (v << 8) | this.physRead8(p);
      }
      return v;
    }
    return this.physRead32(this.translate(lin, false, this.cpl === 3));
  }

  write8(lin: number, v: number): void {
    const e = this.tlb[lin >>> 12]!;
    if ((e & this.wcheck) === this.wcheck) {
      const p = (e & ~0xfff) | (lin & 0xfff);
      if (this.codePage[p >>> 12] !== 0) this.invalidateCode(p);
      this.mem8[p] = v;
      return;
    }
    this.physWrite8(this.translate(lin, true, this.cpl === 3), v);
  }
  write16(lin: number, v: number): void {
    const e = this.tlb[lin >>> 12]!;
    if ((e & this.wcheck) === this.wcheck && (lin & 0xfff) !== 0xfff) {
      const p = (e & ~0xfff) | (lin & 0xfff);
      if (this.codePage[p >>> 12] !== 0) this.invalidateCode(p);
      if ((p & 1) === 0) this.mem16[p >>> 1] = v;
      else {
        this.mem8[p] = v;
        this.mem8[p + 1] = v >> 8;
      }
      return;
    }
    this.writeSlow(lin, v, 2);
  }
  write32(lin: number, v: number): void {
    const e = this.tlb[lin >>> 12]!;
    if ((e & this.wcheck) === this.wcheck && (lin & 0xfff) <= 0xffc) {
      const p = (e & ~0xfff) | (lin & 0xfff);
      if (this.codePage[p >>> 12] !== 0) this.invalidateCode(p);
      if ((p & 3) === 0) this.mem32[p >>> 2] = v;
      else {
        this.mem8[p] = v;
        this.mem8[p + 1] = v >> 8;
        this.mem8[p + 2] = v >> 16;
        this.mem8[p + 3] = v >> 24;
      }
      return;
    }
    this.writeSlow(lin, v, 4);
  }
  private writeSlow(lin: number, v: number, size: number): void {
    if ((lin & 0xfff) + size > 0x1000) {
      // Both pages must be writable before either is written (precise #PF).
      const lo = this.physForWrite(lin);
      const hi = this.physForWrite((lin + size - 1) | 0);
      for (let k = 0; k < size; k++) {
        const a = (lin + k) | 0;
        const p = ((a ^ lin) & ~0xfff) === 0 ? lo + k : ((hi & ~0xfff) | (a & 0xfff)) >>> 0;
        this.physWrite8(p, (v >>> (8 * k)) & 0xff);
      }
      return;
    }
    const p = this.translate(lin, true, this.cpl === 3);
    if (size === 2) this.physWrite16(p, v);
    else this.physWrite32(p, v);
  }

  /**
   * Checks that [lin, lin+size) is writable (faulting now if not) so a read-modify-write can read,
   * set flags and write without a fault in between.
   */
  checkWrite(lin: number, size: number): void {
    const e = this.tlb[lin >>> 12]!;
    if ((e & this.wcheck) === this.wcheck && (lin & 0xfff) <= 0x1000 - size) return;
    this.physForWrite(lin);
    if ((lin & 0xfff) > 0x1000 - size) this.physForWrite((lin + size - 1) | 0);
  }

  /** Generic-size accessors (size in bytes: 1, 2, 4). */
  read(lin: number, size: number): number {
    return size === 4 ? this.read32(lin) : size === 2 ? this.read16(lin) : this.read8(lin);
  }
  write(lin: number, size: number, v: number): void {
    if (size === 4) this.write32(lin, v);
    else if (size === 2) this.write16(lin, v);
    else this.write8(lin, v);
  }

  // ---- supervisor accesses (descriptor tables, TSS, IDT): privilege 0 whatever the CPL
  readSys32(lin: number): number {
    const p = this.translate(lin, false, false);
    if ((p & 0xfff) <= 0xffc) return this.physRead32(p);
    return this.readSys16(lin) | (this.readSys16(lin + 2) << 16);
  }
  readSys16(lin: number): number {
    return (
      this.physRead8(this.translate(lin, false, false)) |
      (this.physRead8(this.translate(lin + 1, false, false)) << 8)
    );
  }
  writeSys32(lin: number, v: number): void {
    this.physWrite32(this.translate(lin, true, false), v);
  }
  writeSys8(lin: number, v: number): void {
    this.physWrite8(this.translate(lin, true, false), v);
  }

  // ======================================================================= registers by size

  getReg(size: number, r: number): number {
    if (size === 4) return this.regs[r]!;
    if (size === 2) return this.regs16[r << 1]!;
    return this.regs8[((r & 3) << 2) | (r >> 2)]!;
  }
  setReg(size: number, r: number, v: number): void {
    if (size === 4) this.regs[r] = v;
    else if (size === 2) this.regs16[r << 1] = v;
    else this.regs8[((r & 3) << 2) | (r >> 2)] = v;
  }

  // ======================================================================= stack

  push32(v: number): void {
    if (this.ss32) {
      const sp = (this.regs[Reg.ESP]! - 4) | 0;
      this.write32((this.segBase[Seg.SS]! + sp) | 0, v);
      this.regs[Reg.ESP] = sp;
    } else {
      const sp = (this.regs16[Reg.ESP << 1]! - 4) & 0xffff;
      this.write32((this.segBase[Seg.SS]! + sp) | 0, v);
      this.regs16[Reg.ESP << 1] = sp;
    }
  }
  push16(v: number): void {
    if (this.ss32) {
      const sp = (this.regs[Reg.ESP]! - 2) | 0;
      this.write16((this.segBase[Seg.SS]! + sp) | 0, v);
      this.regs[Reg.ESP] = sp;
    } else {
      const sp = (this.regs16[Reg.ESP << 1]! - 2) & 0xffff;
      this.write16((this.segBase[Seg.SS]! + sp) | 0, v);
      this.regs16[Reg.ESP << 1] = sp;
    }
  }
  push(size: number, v: number): void {
    if (size === 4) this.push32(v);
    else this.push16(v);
  }
  /** Reads the stack word at offset `k` bytes above the stack pointer (no pop). */
  peek32(k: number): number {
    const sp = this.ss32 ? (this.regs[Reg.ESP]! + k) | 0 : (this.regs16[Reg.ESP << 1]! + k) & 0xffff;
    return this.read32((this.segBase[Seg.SS]! + sp) | 0);
  }
  peek16(k: number): number {
    const sp = this.ss32 ? (this.regs[Reg.ESP]! + k) | 0 : (this.regs16[Reg.ESP << 1]! + k) & 0xffff;
    return this.read16((this.segBase[Seg.SS]! + sp) | 0);
  }
  peek(size: number, k: number): number {
    return size === 4 ? this.peek32(k) : this.peek16(k);
  }
  /** Moves the stack pointer by `n` bytes (after the popped values were read). */
  adjustSp(n: number): void {
    if (this.ss32) this.regs[Reg.ESP] = (this.regs[Reg.ESP]! + n) | 0;
    else this.regs16[Reg.ESP << 1] = (this.regs16[Reg.ESP << 1]! + n) & 0xffff;
  }
  pop32(): number {
    const v = this.peek32(0);
    this.adjustSp(4);
    return v;
  }
  pop16(): number {
    const v = this.peek16(0);
    this.adjustSp(2);
    return v;
  }
  pop(size: number): number {
    return size === 4 ? this.pop32() : this.pop16();
  }
}
