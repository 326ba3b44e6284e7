/**
 * Register, segment, flag and control-register indexes of the software x86 CPU (Intel SDM vol. 1
 * ch. 3.4, vol. 3 ch. 2.5). `const enum` so they compile to plain numbers in the hot loop.
 */

/** General-purpose registers in ModRM encoding order (SDM vol. 2 table 2-1). */
export const enum Reg {
  EAX = 0,
  ECX = 1,
  EDX = 2,
  EBX = 3,
  ESP = 4,
  EBP = 5,
  ESI = 6,
  EDI = 7,
}

/** Segment registers in the encoding order of MOV Sreg (SDM vol. 2, "MOV—Move"). */
export const enum Seg {
  ES = 0,
  CS = 1,
  SS = 2,
  DS = 3,
  FS = 4,
  GS = 5,
  /** Not architectural selectors, but loaded the same way: LDTR and TR. */
  LDTR = 6,
  TR = 7,
}

/** EFLAGS bits (SDM vol. 1 fig. 3-8). */
export const enum Flag {
  CF = 1 << 0,
  /** Bit 1 is reserved and always reads as one. */
  FIXED = 1 << 1,
  PF = 1 << 2,
  AF = 1 << 4,
  ZF = 1 << 6,
  SF = 1 << 7,
  TF = 1 << 8,
  IF = 1 << 9,
  DF = 1 << 10,
  OF = 1 << 11,
  IOPL = 3 << 12,
  NT = 1 << 14,
  RF = 1 << 16,
  VM = 1 << 17,
  AC = 1 << 18,
  VIF = 1 << 19,
  VIP = 1 << 20,
  ID = 1 << 21,
  /** The six arithmetic flags that the lazy-flag machinery computes. */
  ARITH = CF | PF | AF | ZF | SF | OF,
}

/** CR0 bits (SDM vol. 3 fig. 2-7). */
export const enum Cr0 {
  PE = 1 << 0,
  MP = 1 << 1,
  EM = 1 << 2,
  TS = 1 << 3,
  ET = 1 << 4,
  NE = 1 << 5,
  WP = 1 << 16,
  AM = 1 << 18,
  NW = 1 << 29,
  CD = 1 << 30,
  PG = 1 << 31,
}

/** CR4 bits this CPU honours (SDM vol. 3 fig. 2-7). */
export const enum Cr4 {
  VME = 1 << 0,
  PVI = 1 << 1,
  TSD = 1 << 2,
  DE = 1 << 3,
  PSE = 1 << 4,
  PAE = 1 << 5,
  MCE = 1 << 6,
  PGE = 1 << 7,
  PCE = 1 << 8,
  OSFXSR = 1 << 9,
  OSXMMEXCPT = 1 << 10,
}

/** Exception vectors (SDM vol. 3 table 6-1). */
export const enum Vec {
  DE = 0,
  DB = 1,
  NMI = 2,
  BP = 3,
  OF = 4,
  BR = 5,
  UD = 6,
  NM = 7,
  DF = 8,
  TS = 10,
  NP = 11,
  SS = 12,
  GP = 13,
  PF = 14,
  MF = 16,
  AC = 17,
}

/** Page-table entry bits (SDM vol. 3 table 4-5, 4-6). */
export const enum Pte {
  P = 1 << 0,
  RW = 1 << 1,
  US = 1 << 2,
  PWT = 1 << 3,
  PCD = 1 << 4,
  A = 1 << 5,
  D = 1 << 6,
  PS = 1 << 7,
  G = 1 << 8,
}
