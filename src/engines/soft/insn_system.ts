/**
 * System instructions (SDM vol. 2, vol. 3 ch. 2.8): segment register loads, descriptor-table
 * registers, control/debug registers, MSRs, CPUID, TSC, SYSENTER/SYSEXIT, port I/O, and the x87
 * escape into the FPU. Privilege checks go through `privilege.ts`.
 */
import { CPU_UNIMPLEMENTED, type Cpu } from "./cpu.js";
import { type FpuMemory, FpuInvalidOpcode, fpuInstructionWaits } from "./fpu/fpu.js";
import { type Insn, lin, readRm } from "./insn.js";
import { checkIo, requireCpl0, sensitiveNoTrap } from "./privilege.js";
import { Cr0, Cr4, Flag, Reg, Seg, Vec } from "./registers.js";
import { desc, dplOf, loadSegment, readDescriptor } from "./segmentation.js";

// ============================================================================ segment registers

/** 8C MOV Ev,Sreg. */
export function mov_rm_sreg(c: Cpu, i: Insn): void {
  if (i.reg > 5) c.ud();
  const v = c.segSel[i.reg]!;
  if (i.isMem) c.write16(lin(c, i), v);
  else c.setReg(i.size, i.rm, v);
}
/** 8E MOV Sreg,Ew (MOV CS is #UD; MOV SS inhibits interrupts for one instruction). */
export function mov_sreg_rm(c: Cpu, i: Insn): void {
  if (i.reg === Seg.CS || i.reg > 5) c.ud();
  loadSegment(c, i.reg, readRm(c, i, 2));
  if (i.reg === Seg.SS) {
    c.interruptShadow = true;
    c.slice = 0;
  }
}
/** C4 LES, C5 LDS, 0F B2 LSS, 0F B4 LFS, 0F B5 LGS: Gv, Mp. */
const LXS_SEG: Record<number, number> = {
  196: Seg.ES,
  197: Seg.DS,
  4018: Seg.SS,
  4020: Seg.FS,
  4021: Seg.GS,
};
export function lxs(c: Cpu, i: Insn): void {
  if (!i.isMem) c.ud();
  const a = lin(c, i);
  const off = c.read(a, i.size);
  const sel = c.read16((a + i.size) | 0);
  loadSegment(c, LXS_SEG[i.opcode]!, sel);
  c.setReg(i.size, i.reg, off);
}

// ============================================================================ group 6 / group 7

/** 0F 00 /0 SLDT, /1 STR. */
export function sldt_str(c: Cpu, i: Insn): void {
  if (!c.protectedMode) c.ud();
  const v = c.segSel[i.reg === 0 ? Seg.LDTR : Seg.TR]!;
  if (i.isMem) c.write16(lin(c, i), v);
  else c.setReg(i.size, i.rm, v);
}
/** 0F 00 /2 LLDT. */
export function lldt(c: Cpu, i: Insn): void {
  if (!c.protectedMode) c.ud();
  requireCpl0(c, "lldt");
  const sel = readRm(c, i, 2);
  if ((sel & 0xfffc) === 0) {
    c.segSel[Seg.LDTR] = 0;
    c.segBase[Seg.LDTR] = 0;
    c.segLimit[Seg.LDTR] = 0;
    return;
  }
  if ((sel & 4) !== 0) c.gp(sel & 0xfffc);
  readDescriptor(c, sel);
  if ((desc.attr & 0x1f) !== 0x02) c.gp(sel & 0xfffc);
  if ((desc.attr & 0x80) === 0) c.fault(Vec.NP, sel & 0xfffc);
  c.segSel[Seg.LDTR] = sel;
  c.segBase[Seg.LDTR] = desc.base;
  c.segLimit[Seg.LDTR] = desc.limit;
  c.segAttr[Seg.LDTR] = desc.attr;
}
/** 0F 00 /3 LTR: loads an available 32-bit TSS and marks it busy. */
export function ltr(c: Cpu, i: Insn): void {
  if (!c.protectedMode) c.ud();
  requireCpl0(c, "ltr");
  const sel = readRm(c, i, 2);
  if ((sel & 0xfffc) === 0 || (sel & 4) !== 0) c.gp(sel & 0xfffc);
  readDescriptor(c, sel);
  const type = desc.attr & 0x1f;
  if (type !== 0x09 && type !== 0x01) c.gp(sel & 0xfffc);
  if ((desc.attr & 0x80) === 0) c.fault(Vec.NP, sel & 0xfffc);
  c.writeSys8((desc.addr + 5) | 0, ((desc.hi >>> 8) & 0xff) | 2);
  c.segSel[Seg.TR] = sel;
  c.segBase[Seg.TR] = desc.base;
  c.segLimit[Seg.TR] = desc.limit;
  c.segAttr[Seg.TR] = desc.attr | 2;
}
/** 0F 00 /4 VERR, /5 VERW: ZF=1 when the segment is readable / writable at CPL and RPL. */
export function verrw(c: Cpu, i: Insn): void {
  if (!c.protectedMode) c.ud();
  const sel = readRm(c, i, 2);
  let ok = false;
  if ((sel & 0xfffc) !== 0 && segmentVisible(c, sel)) {
    const a = desc.attr;
    const code = (a & 0x18) === 0x18;
    const data = (a & 0x18) === 0x10;
    const conforming = code && (a & 4) !== 0;
    const privOk = conforming || (dplOf(a) >= c.cpl && dplOf(a) >= (sel & 3));
    if (i.reg === 4) ok = privOk && (data || (code && (a & 2) !== 0));
    else ok = privOk && data && (a & 2) !== 0;
  }
  setZF(c, ok);
}
function segmentVisible(c: Cpu, sel: number): boolean {
  const limit = (sel & 4) !== 0 ? c.segLimit[Seg.LDTR]! >>> 0 : c.gdtLimit;
  if ((sel & 0xfff8) + 7 > limit) return false;
  readDescriptor(c, sel);
  return true;
}
function setZF(c: Cpu, on: boolean): void {
  c.materializeFlags();
  if (on) c.flags |= Flag.ZF;
  else c.flags &= ~Flag.ZF;
}
/** 0F 02 LAR, 0F 03 LSL. */
export function lar_lsl(c: Cpu, i: Insn): void {
  if (!c.protectedMode) c.ud();
  const sel = readRm(c, i, 2);
  if ((sel & 0xfffc) === 0 || !segmentVisible(c, sel)) {
    setZF(c, false);
    return;
  }
  const a = desc.attr;
  const system = (a & 0x10) === 0;
  const type = a & 0xf;
  const conforming = (a & 0x1c) === 0x1c;
  if (system) {
    const okLar = [1, 2, 3, 4, 5, 9, 0xb, 0xc].includes(type);
    const okLsl = [1, 2, 3, 9, 0xb].includes(type);
    if (!(i.opcode === 0x0f02 ? okLar : okLsl)) {
      setZF(c, false);
      return;
    }
  }
  if (!conforming && (dplOf(a) < c.cpl || dplOf(a) < (sel & 3))) {
    setZF(c, false);
    return;
  }
  if (i.opcode === 0x0f02) c.setReg(i.size, i.reg, desc.hi & (i.size === 4 ? 0x00f0ff00 : 0xff00));
  else c.setReg(i.size, i.reg, desc.limit);
  setZF(c, true);
}

/** 0F 01 /0 SGDT, /1 SIDT (not privileged: a sensitive instruction that does not trap). */
export function sgdt_sidt(c: Cpu, i: Insn): void {
  if (c.cpl !== 0) sensitiveNoTrap.set("sgdt/sidt", (sensitiveNoTrap.get("sgdt/sidt") ?? 0) + 1);
  const a = lin(c, i);
  const idt = i.reg === 1;
  c.checkWrite(a, 2);
  c.checkWrite((a + 2) | 0, 4);
  c.write16(a, idt ? c.idtLimit : c.gdtLimit);
  c.write32((a + 2) | 0, idt ? c.idtBase : c.gdtBase);
}
/** 0F 01 /2 LGDT, /3 LIDT (a 16-bit operand size loads 24 bits of base). */
export function lgdt_lidt(c: Cpu, i: Insn): void {
  requireCpl0(c, i.reg === 2 ? "lgdt" : "lidt");
  const a = lin(c, i);
  const limit = c.read16(a);
  let base = c.read32((a + 2) | 0);
  if (i.size === 2) base &= 0xffffff;
  if (i.reg === 2) {
    c.gdtLimit = limit;
    c.gdtBase = base;
  } else {
    c.idtLimit = limit;
    c.idtBase = base;
  }
}
/** 0F 01 /4 SMSW (sensitive, not trapping), /6 LMSW (can set PE, cannot clear it). */
export function smsw(c: Cpu, i: Insn): void {
  if (c.cpl !== 0) sensitiveNoTrap.set("smsw", (sensitiveNoTrap.get("smsw") ?? 0) + 1);
  if (i.isMem) c.write16(lin(c, i), c.cr0 & 0xffff);
  else c.setReg(i.size, i.rm, c.cr0);
}
export function lmsw(c: Cpu, i: Insn): void {
  requireCpl0(c, "lmsw");
  const v = readRm(c, i, 2);
  setCr0(c, (c.cr0 & ~0xe) | (v & 0xf) | (c.cr0 & 1));
}
/** 0F 01 /7 INVLPG. */
export function invlpg(c: Cpu, i: Insn): void {
  requireCpl0(c, "invlpg");
  c.invlpg(lin(c, i));
}

// ============================================================================ control registers

export function setCr0(c: Cpu, v: number): void {
  v |= Cr0.ET;
  if ((v & Cr0.PG) !== 0 && (v & Cr0.PE) === 0) c.gp(0);
  const changed = c.cr0 ^ v;
  c.cr0 = v;
  if ((changed & (Cr0.PG | Cr0.WP | Cr0.PE)) !== 0) c.flushTlb(true);
  c.updateMode();
  c.slice = 0;
}
/** 0F 20 MOV r32,CRn; 0F 22 MOV CRn,r32 (the r/m operand is always a register). */
export function mov_r_cr(c: Cpu, i: Insn): void {
  requireCpl0(c, "mov from cr");
  let v: number;
  switch (i.reg) {
    case 0:
      v = c.cr0;
      break;
    case 2:
      v = c.cr2;
      break;
    case 3:
      v = c.cr3;
      break;
    case 4:
      v = c.cr4;
      break;
    default:
      c.ud();
  }
  c.regs[i.rm] = v;
}
export function mov_cr_r(c: Cpu, i: Insn): void {
  requireCpl0(c, "mov to cr");
  const v = c.regs[i.rm]!;
  switch (i.reg) {
    case 0:
      setCr0(c, v);
      return;
    case 2:
      c.cr2 = v;
      return;
    case 3:
      c.cr3 = v;
      c.flushTlb(false);
      return;
    case 4: {
      const supported =
        Cr4.PSE | Cr4.PAE | Cr4.PGE | Cr4.TSD | Cr4.DE | Cr4.PCE | Cr4.OSFXSR | Cr4.OSXMMEXCPT;
      if ((v & ~supported) !== 0) c.gp(0);
      const changed = c.cr4 ^ v;
      c.cr4 = v;
      if ((changed & (Cr4.PSE | Cr4.PGE | Cr4.PAE)) !== 0) c.flushTlb(true);
      return;
    }
    default:
      c.ud();
  }
}
/** 0F 21 MOV r32,DRn; 0F 23 MOV DRn,r32 (stored; breakpoints are not raised). */
export function mov_r_dr(c: Cpu, i: Insn): void {
  requireCpl0(c, "mov from dr");
  let n = i.reg;
  if (n === 4 || n === 5) n += 2;
  c.regs[i.rm] = n === 6 ? c.dr[6]! | 0xffff0ff0 : n === 7 ? c.dr[7]! | 0x400 : c.dr[n]!;
}
export function mov_dr_r(c: Cpu, i: Insn): void {
  requireCpl0(c, "mov to dr");
  let n = i.reg;
  if (n === 4 || n === 5) n += 2;
  c.dr[n] = c.regs[i.rm]!;
}
/** 0F 06 CLTS. */
export function clts(c: Cpu): void {
  requireCpl0(c, "clts");
  c.cr0 &= ~Cr0.TS;
}
/** 0F 08 INVD, 0F 09 WBINVD: no caches to model. */
export function invd(c: Cpu): void {
  requireCpl0(c, "wbinvd");
}

// ============================================================================ MSRs, TSC, CPUID

const MSR_TSC = 0x10;
const MSR_PLATFORM_ID = 0x17;
const MSR_APIC_BASE = 0x1b;
const MSR_BIOS_SIGN_ID = 0x8b;
const MSR_SYSENTER_CS = 0x174;
const MSR_SYSENTER_ESP = 0x175;
const MSR_SYSENTER_EIP = 0x176;
const MSR_MISC_ENABLE = 0x1a0;

export function readTsc(c: Cpu): number {
  return Math.floor((c.clockNs() * c.tscHz) / 1e9) + c.tscOffset;
}

/** 0F 31 RDTSC (#GP at CPL > 0 when CR4.TSD). */
export function rdtsc(c: Cpu): void {
  if ((c.cr4 & Cr4.TSD) !== 0) requireCpl0(c, "rdtsc");
  const t = readTsc(c);
  c.regs[Reg.EAX] = t % 0x100000000;
  c.regs[Reg.EDX] = Math.floor(t / 0x100000000);
}
/** 0F 32 RDMSR: the MSRs Linux touches; any other one raises #GP(0). */
export function rdmsr(c: Cpu): void {
  requireCpl0(c, "rdmsr");
  const n = c.regs[Reg.ECX]! >>> 0;
  let lo = 0;
  let hi = 0;
  const platform = c.platformMsrs?.readMsr(n) ?? c.paravirt?.readMsr(c, n);
  if (platform !== undefined) {
    c.regs[Reg.EAX] = Number(platform & 0xffffffffn);
    c.regs[Reg.EDX] = Number(platform >> 32n);
    return;
  }
  switch (n) {
    case MSR_TSC: {
      const t = readTsc(c);
      lo = t % 0x100000000;
      hi = Math.floor(t / 0x100000000);
      break;
    }
    case MSR_PLATFORM_ID:
    case MSR_BIOS_SIGN_ID:
      break;
    case MSR_APIC_BASE:
      lo = c.apicBase;
      break;
    case MSR_SYSENTER_CS:
      lo = c.sysenterCs;
      break;
    case MSR_SYSENTER_ESP:
      lo = c.sysenterEsp;
      break;
    case MSR_SYSENTER_EIP:
      lo = c.sysenterEip;
      break;
    case MSR_MISC_ENABLE:
      lo = 1; // fast strings enabled
      break;
    default:
      c.gp(0);
  }
  c.regs[Reg.EAX] = lo;
  c.regs[Reg.EDX] = hi;
}
/** 0F 30 WRMSR. */
export function wrmsr(c: Cpu): void {
  requireCpl0(c, "wrmsr");
  const n = c.regs[Reg.ECX]! >>> 0;
  const lo = c.regs[Reg.EAX]!;
  const hi = c.regs[Reg.EDX]! >>> 0;
  if (c.platformMsrs?.writeMsr(n, (BigInt(hi) << 32n) | BigInt(lo >>> 0)) === true) {
    if (n === MSR_TSC) c.tscOffset = hi * 0x100000000 + (lo >>> 0) - (readTsc(c) - c.tscOffset);
    if (n === MSR_TSC) c.paravirt?.updateSystemTime(c);
    return;
  }
  if (c.paravirt?.writeMsr(c, n, (BigInt(hi) << 32n) | BigInt(lo >>> 0)) === true) return;
  switch (n) {
    case MSR_TSC: {
      const want = hi * 0x100000000 + (lo >>> 0);
      c.tscOffset = 0;
      c.tscOffset = want - readTsc(c);
      c.paravirt?.updateSystemTime(c);
      return;
    }
    case MSR_BIOS_SIGN_ID:
    case MSR_MISC_ENABLE:
      return;
    case MSR_APIC_BASE:
      c.apicBase = lo;
      return;
    case MSR_SYSENTER_CS:
      c.sysenterCs = lo & 0xffff;
      return;
    case MSR_SYSENTER_ESP:
      c.sysenterEsp = lo;
      return;
    case MSR_SYSENTER_EIP:
      c.sysenterEip = lo;
      return;
    default:
      c.gp(0);
  }
}

/** "GenuineIntel" as EBX, EDX, ECX. */
const VENDOR = [0x756e6547, 0x49656e69, 0x6c65746e];

/**
 * 0F A2 CPUID: advertises only what this CPU implements (SDM vol. 2 "CPUID" table 3-11):
 * FPU, PSE, TSC, MSR, PAE (no NX), CX8, APIC (when present), SEP, PGE, CMOV, FXSR.
 */
export function cpuid(c: Cpu): void {
  const leaf = c.regs[Reg.EAX]! >>> 0;
  const pv = c.paravirt?.cpuid(leaf);
  if (pv !== undefined) {
    [c.regs[Reg.EAX], c.regs[Reg.EBX], c.regs[Reg.ECX], c.regs[Reg.EDX]] = pv;
    return;
  }
  let a = 0;
  let b = 0;
  let cx = 0;
  let d = 0;
  if (leaf === 0) {
    a = 1;
    b = VENDOR[0]!;
    d = VENDOR[1]!;
    cx = VENDOR[2]!;
  } else if (leaf === 1) {
    a = (6 << 8) | (15 << 4) | 1; // family 6, model 15, stepping 1
    b = 0; // APIC id 0, one logical processor, no CLFLUSH line size
    const FPU = 1 << 0;
    const PSE = 1 << 3;
    const PAE = 1 << 6;
    const TSC = 1 << 4;
    const MSR = 1 << 5;
    const CX8 = 1 << 8;
    const APIC = 1 << 9;
    const SEP = 1 << 11;
    const PGE = 1 << 13;
    const CMOV = 1 << 15;
    const FXSR = 1 << 24;
    d = FPU | PSE | TSC | MSR | PAE | CX8 | SEP | PGE | CMOV;
    if (c.cpuidApic) d |= APIC;
    if (c.cpuidFxsr) d |= FXSR;
    if (c.paravirt !== undefined) cx |= 1 << 31; // hypervisor present: look at 0x40000000
  } else if (leaf === 0x80000000) {
    a = 0x80000000;
  }
  c.regs[Reg.EAX] = a;
  c.regs[Reg.EBX] = b;
  c.regs[Reg.ECX] = cx;
  c.regs[Reg.EDX] = d;
}

/** 0F 34 SYSENTER (SDM vol. 2 "SYSENTER"): flat CPL-0 CS/SS from IA32_SYSENTER_CS. */
export function sysenter(c: Cpu): void {
  if (!c.protectedMode || (c.sysenterCs & 0xfffc) === 0) c.gp(0);
  c.flags &= ~(Flag.VM | Flag.IF | Flag.RF);
  const cs = c.sysenterCs & 0xfffc;
  setFlat(c, Seg.CS, cs, 0x4c9b, 0);
  setFlat(c, Seg.SS, cs + 8, 0x4c93, 0);
  c.cpl = 0;
  c.updateMode();
  c.regs[Reg.ESP] = c.sysenterEsp;
  c.eip = c.sysenterEip;
}
/** 0F 35 SYSEXIT: CPL 3 with CS = SYSENTER_CS+16, SS = +24; EIP = EDX, ESP = ECX. */
export function sysexit(c: Cpu): void {
  if (!c.protectedMode || (c.sysenterCs & 0xfffc) === 0) c.gp(0);
  requireCpl0(c, "sysexit");
  const cs = c.sysenterCs & 0xfffc;
  setFlat(c, Seg.CS, (cs + 16) | 3, 0x4cfb, 3);
  setFlat(c, Seg.SS, (cs + 24) | 3, 0x4cf3, 3);
  c.cpl = 3;
  c.updateMode();
  c.regs[Reg.ESP] = c.regs[Reg.ECX]!;
  c.eip = c.regs[Reg.EDX]!;
}
function setFlat(c: Cpu, s: number, sel: number, attr: number, _dpl: number): void {
  c.segSel[s] = sel;
  c.segBase[s] = 0;
  c.segLimit[s] = -1;
  c.segAttr[s] = attr | 0x8000;
}

// ============================================================================ port I/O

/** E4/E5 IN AL/eAX,ib; EC/ED IN AL/eAX,DX. */
export function in_(c: Cpu, i: Insn): void {
  const port = (i.opcode & 8) !== 0 ? c.regs16[Reg.EDX << 1]! : i.imm & 0xff;
  checkIo(c, port, i.size);
  c.setReg(i.size, Reg.EAX, c.ports.read(port, i.size as 1 | 2 | 4));
}
/** E6/E7 OUT ib,AL/eAX; EE/EF OUT DX,AL/eAX. */
export function out_(c: Cpu, i: Insn): void {
  const port = (i.opcode & 8) !== 0 ? c.regs16[Reg.EDX << 1]! : i.imm & 0xff;
  checkIo(c, port, i.size);
  const v = c.getReg(i.size, Reg.EAX);
  c.ports.write(port, i.size as 1 | 2 | 4, i.size === 4 ? v >>> 0 : v);
}

// ============================================================================ misc

/** 0F 0B UD2 and reserved encodings. */
export function ud2(c: Cpu): void {
  c.ud();
}
/** 0F 1F /0 NOP Ev, 0F 18-1E hint NOPs, 0F 0D prefetch. */
export function nop_rm(_c: Cpu): void {}
/** F3 90 PAUSE is NOP with a REP prefix: let the run loop look at timers. */
export function pause(c: Cpu): void {
  c.slice = 0;
}

// ============================================================================ x87 FPU

/** CPU-side FpuMemory: linear accesses through segmentation, the TLB and paging. */
export class CpuFpuMemory implements FpuMemory {
  constructor(private readonly c: Cpu) {}
  readU8(a: number): number {
    return this.c.read8(a | 0);
  }
  readU16(a: number): number {
    return this.c.read16(a | 0);
  }
  readU32(a: number): number {
    return this.c.read32(a | 0) >>> 0;
  }
  writeU8(a: number, v: number): void {
    this.c.write8(a | 0, v);
  }
  writeU16(a: number, v: number): void {
    this.c.write16(a | 0, v);
  }
  writeU32(a: number, v: number): void {
    this.c.write32(a | 0, v);
  }
}

let fpuMemory: CpuFpuMemory | undefined;
let fpuMemoryCpu: Cpu | undefined;
function memFor(c: Cpu): CpuFpuMemory {
  if (fpuMemoryCpu !== c) {
    fpuMemory = new CpuFpuMemory(c);
    fpuMemoryCpu = c;
  }
  return fpuMemory!;
}

/** Message of the last x87 instruction the FPU could not run (for the unimplemented report). */
export let fpuFailure = "";

/** D8-DF x87 escape: #NM when CR0.EM or CR0.TS (SDM vol. 3 ch. 2.5), #MF when pending. */
export function fpu_escape(c: Cpu, i: Insn): void {
  if ((c.cr0 & (Cr0.EM | Cr0.TS)) !== 0) c.fault(Vec.NM);
  const op = i.opcode;
  const modrm = i.modrm;
  if (c.fpu.pendingUnmaskedException && fpuInstructionWaits(op, modrm)) c.fault(Vec.MF);
  const address = i.isMem ? lin(c, i) : 0;
  c.fpu.ip = c.startEip;
  c.fpu.cs = c.segSel[Seg.CS]!;
  try {
    c.fpu.execute(op, modrm, address, memFor(c), i.size === 4);
  } catch (e) {
    if (e instanceof FpuInvalidOpcode) c.ud();
    if (typeof e === "object" && e !== null && "kind" in e) throw e;
    fpuFailure = e instanceof Error ? e.message : String(e);
    throw CPU_UNIMPLEMENTED;
  }
}
/** 9B FWAIT. */
export function fwait(c: Cpu): void {
  if ((c.cr0 & (Cr0.MP | Cr0.TS)) === (Cr0.MP | Cr0.TS)) c.fault(Vec.NM);
  if (c.fpu.pendingUnmaskedException) c.fault(Vec.MF);
}
/** 0F AE /0 FXSAVE, /1 FXRSTOR; /5 /6 /7 fences (register forms) are no-ops. */
export function fxsave(c: Cpu, i: Insn): void {
  if ((c.cr0 & (Cr0.EM | Cr0.TS)) !== 0) c.fault(Vec.NM);
  if (!c.cpuidFxsr) c.ud();
  const a = lin(c, i);
  if ((a & 15) !== 0) c.gp(0);
  if (i.reg === 0) c.fpu.fxsave(a, memFor(c));
  else c.fpu.fxrstor(a, memFor(c));
}
export function fence(_c: Cpu): void {}
