/**
 * The architectural CPU state at a kernel's entry point, engine-independent: `boot/` computes it
 * (Linux boot protocol: 32-bit entry at code32_start with flat segments, ESI = boot_params; or
 * 64-bit entry at startup_64 = load address + 0x200, RSI = boot_params, identity-mapped paging),
 * and each engine loads it into its vCPU (KVM_SET_SREGS/REGS, or the software CPU's registers).
 */
export interface SegmentState {
  selector: number;
  base: number;
  limit: number; // byte-granular limit as the CPU sees it (0xffffffff for flat 4 GiB)
  /** Descriptor type field (4 bits): 0xb = execute/read code accessed, 0x3 = read/write data accessed. */
  type: number;
  present: boolean;
  dpl: number;
  /** S bit: code/data (true) or system (false). */
  s: boolean;
  /** D/B bit: 32-bit default operand size. */
  db: boolean;
  /** L bit: 64-bit code segment. */
  l: boolean;
  /** Granularity bit (limit in 4 KiB units in the descriptor). */
  g: boolean;
}

export interface TableState {
  base: number;
  limit: number;
}

export interface EntryState {
  mode: "protected32" | "long64";
  rip: number;
  rsp: number;
  /** Pointer to boot_params (RSI in 64-bit, ESI in 32-bit entry). */
  rsi: number;
  rflags: number;
  cr0: number;
  cr3: number;
  cr4: number;
  efer: number;
  cs: SegmentState;
  ds: SegmentState;
  es: SegmentState;
  fs: SegmentState;
  gs: SegmentState;
  ss: SegmentState;
  tr: SegmentState;
  ldt: SegmentState;
  gdt: TableState;
  idt: TableState;
}
