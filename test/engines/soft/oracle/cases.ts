/**
 * Machine-code test cases for every instruction group, in NASM syntax (assembled at test time by
 * nasm.ts into the snippet ABI of snippet.ts). Each case states its inputs and the values the SDM
 * says it must produce; the oracle test runs it on the software CPU and on the hardware (KVM),
 * checks both against these expectations and against each other.
 *
 * Flags: `flags` lists expected flag values ("CF" set, "-CF" clear); `undef` names the flags the
 * SDM leaves undefined after the case's last flag-writing instruction: they are neither asserted
 * nor compared between runners.
 */
import { AF, CF, type Need, OF, PF, type RegName, type Regs, SF, ZF } from "./snippet.js";

export interface OracleCase {
  name: string;
  asm: string;
  regs?: Partial<Regs>;
  eflags?: number;
  /** Initial data area contents at offsets. */
  data?: Record<number, Uint8Array>;
  want?: Partial<Regs>;
  flags?: string;
  undef?: number;
  ignoreRegs?: RegName[];
  /** Expected data area contents at offsets. */
  wantData?: Record<number, Uint8Array>;
  /** Expected ending exception (default: the END marker's #GP(0)). */
  vector?: number;
  errorCode?: number;
  /** Expected EIP of the ending exception relative to the code base (default: the END marker). */
  eipOffset?: number;
  /** Float32 results compared within `ulps` (x87 transcendental instructions, see fpu/ext80.ts). */
  floats?: { offset: number; want: number; ulps: number }[];
  /** A known gap of the software CPU: the case runs and reports, but does not fail the suite. */
  todo?: string;
  /** The run may end anywhere (random programs with unmasked exceptions): runners must agree. */
  anyEnd?: boolean;
  /** Error-code bits that count (default all). */
  errorMask?: number;
  /** Instruction kinds the case needs (a runner that cannot run them sits the case out). */
  needs?: Need[];
  /** Data bytes excluded from the exact comparison between runners ([offset, length]). */
  ignoreData?: [number, number][];
  /**
   * The code means the same as 64-bit code (x87 work, plain register moves and compares, no
   * stack, no 32-bit address forms): host64_runner.ts runs it natively in a 64-bit process.
   */
  sameIn64?: boolean;
  /**
   * Data bytes holding an x87 instruction pointer (FNSTENV's FIP): compared between runners,
   * except with one whose code sits at other addresses (host64_runner.ts).
   */
  ipData?: [number, number][];
}

export const FLAG_BITS: Record<string, number> = {
  CF,
  PF,
  AF,
  ZF,
  SF,
  OF,
  DF: 0x400,
  IF: 0x200,
  RF: 0x10000,
};

export function u32s(...v: number[]): Uint8Array {
  const b = new Uint8Array(v.length * 4);
  const d = new DataView(b.buffer);
  for (const [i, x] of v.entries()) d.setUint32(i * 4, x >>> 0, true);
  return b;
}
export function u16s(...v: number[]): Uint8Array {
  const b = new Uint8Array(v.length * 2);
  const d = new DataView(b.buffer);
  for (const [i, x] of v.entries()) d.setUint16(i * 2, x & 0xffff, true);
  return b;
}
export function bytes(...v: number[]): Uint8Array {
  return Uint8Array.from(v);
}
export function f64(v: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v, true);
  return b;
}
export function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"));
}
export function ascii(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s, "latin1"));
}

const LOGIC_UNDEF = AF;
const MUL_UNDEF = SF | ZF | AF | PF;
const BT_UNDEF = OF | SF | AF | PF;

export const GROUPS: Record<string, OracleCase[]> = {
  alu: [
    {
      name: "add wraps to zero with CF ZF PF AF",
      asm: "add eax, 1",
      regs: { eax: 0xffffffff },
      want: { eax: 0 },
      flags: "CF ZF PF AF -SF -OF",
    },
    {
      name: "add signed overflow sets OF SF",
      asm: "add eax, 1",
      regs: { eax: 0x7fffffff },
      want: { eax: 0x80000000 },
      flags: "OF SF AF PF -CF -ZF",
    },
    {
      name: "sub borrows",
      asm: "sub eax, 1",
      regs: { eax: 0 },
      want: { eax: 0xffffffff },
      flags: "CF SF AF PF -ZF -OF",
    },
    {
      name: "add/adc chain adds 64-bit numbers",
      asm: "add eax, ebx\nadc edx, ecx",
      regs: { eax: 0xffffffff, edx: 1, ebx: 1, ecx: 2 },
      want: { eax: 0, edx: 4 },
      flags: "-CF -ZF -SF -OF -PF -AF",
    },
    {
      name: "sub/sbb chain subtracts 64-bit numbers",
      asm: "sub eax, ebx\nsbb edx, ecx",
      regs: { eax: 0, edx: 5, ebx: 1, ecx: 5 },
      want: { eax: 0xffffffff, edx: 0xffffffff },
      flags: "CF SF AF PF -ZF -OF",
    },
    {
      name: "8-bit add overflows to zero",
      asm: "mov al, 0x80\nadd al, 0x80",
      regs: { eax: 0x12345600 },
      want: { eax: 0x12345600 },
      flags: "CF OF ZF PF -AF -SF",
    },
    {
      name: "16-bit sub overflows",
      asm: "mov bx, 0x8000\nsub bx, 1",
      regs: { ebx: 0xabcd0000 },
      want: { ebx: 0xabcd7fff },
      flags: "OF AF PF -CF -SF -ZF",
    },
    {
      name: "logic ops clear CF OF",
      asm: "stc\nand eax, 0x0ff00ff0\nor eax, 0x01000000\nxor eax, ebx\nnot ecx\ntest eax, eax",
      regs: { eax: 0xf0f0f0f0, ebx: 0x0000000f, ecx: 0x0f0f0f0f },
      want: { eax: 0x01f000ff, ecx: 0xf0f0f0f0 },
      flags: "PF -CF -OF -ZF -SF",
      undef: LOGIC_UNDEF,
    },
    {
      name: "neg of nonzero sets CF",
      asm: "neg eax",
      regs: { eax: 5 },
      want: { eax: 0xfffffffb },
      flags: "CF SF AF -PF -ZF -OF",
    },
    {
      name: "neg of zero clears CF",
      asm: "stc\nneg eax",
      regs: { eax: 0 },
      want: { eax: 0 },
      flags: "ZF PF -CF -SF -OF -AF",
    },
    {
      name: "inc preserves CF and overflows",
      asm: "stc\ninc eax",
      regs: { eax: 0x7fffffff },
      want: { eax: 0x80000000 },
      flags: "CF OF SF AF PF -ZF",
    },
    {
      name: "dec preserves CF",
      asm: "clc\ndec eax",
      regs: { eax: 1 },
      want: { eax: 0 },
      flags: "ZF PF -CF -SF -OF -AF",
    },
    {
      name: "cmp then lahf",
      asm: "cmp eax, 5\nlahf",
      regs: { eax: 3 },
      want: { eax: 0x00009303 },
      flags: "CF SF AF -PF -ZF -OF",
    },
    {
      name: "sahf loads SF ZF AF PF CF",
      asm: "mov ah, 0xd5\nsahf",
      regs: { eax: 0 },
      want: { eax: 0xd500 },
      flags: "SF ZF AF PF CF",
    },
    {
      name: "movsx movzx cbw cwde cdq lea",
      asm: "movsx ebx, al\nmovzx ecx, al\ncbw\ncwde\ncdq\nlea esi, [ebx+ecx*4+0x10]\nmovsx edi, word [DATA]",
      regs: { eax: 0x80 },
      data: { 0: u16s(0x8001) },
      want: { eax: 0xffffff80, ebx: 0xffffff80, ecx: 0x80, edx: 0xffffffff, esi: 0x190, edi: 0xffff8001 },
    },
    {
      name: "xchg and memory ALU operands",
      asm: "xchg eax, ebx\nadd [DATA], eax\nsub [DATA+4], ebx\nxchg [DATA+8], ecx\nlock inc dword [DATA+12]",
      regs: { eax: 1, ebx: 2, ecx: 3 },
      data: { 0: u32s(10, 20, 30, 40) },
      want: { eax: 2, ebx: 1, ecx: 30 },
      wantData: { 0: u32s(12, 19, 3, 41) },
      flags: "-CF -ZF -SF -OF -PF -AF",
    },
    {
      name: "daa and das adjust BCD",
      asm: "mov al, 0x19\nadd al, 0x28\ndaa\nmov bl, al\nmov al, 0x41\nsub al, 0x27\ndas",
      want: { eax: 0x14, ebx: 0x47 },
      undef: OF,
      needs: ["bcd"],
    },
  ],
  shift: [
    {
      name: "shl by 1 sets CF and OF",
      asm: "shl eax, 1",
      regs: { eax: 0x80000001 },
      want: { eax: 2 },
      flags: "CF OF -SF -ZF -PF",
      undef: AF,
    },
    {
      name: "shr by 4",
      asm: "shr eax, 4",
      regs: { eax: 0x1f },
      want: { eax: 1 },
      flags: "CF -SF -ZF -PF",
      undef: AF | OF,
    },
    {
      name: "sar by cl=31 fills with the sign",
      asm: "sar eax, cl",
      regs: { eax: 0x80000000, ecx: 31 },
      want: { eax: 0xffffffff },
      flags: "SF PF -CF -ZF",
      undef: AF | OF,
    },
    {
      name: "shift count is masked to 5 bits; count 0 keeps flags",
      asm: "shl eax, cl\nstc\nmov cl, 0\nshl ebx, cl",
      regs: { eax: 1, ebx: 0x12345678, ecx: 33 },
      want: { eax: 2, ebx: 0x12345678, ecx: 0 },
      flags: "CF",
      undef: AF,
    },
    {
      name: "rol by 1",
      asm: "rol eax, 1",
      regs: { eax: 0x80000001 },
      want: { eax: 3 },
      flags: "CF OF",
    },
    {
      name: "ror by 8",
      asm: "ror ebx, 8",
      regs: { ebx: 0x12345678 },
      want: { ebx: 0x78123456 },
      flags: "-CF",
      undef: OF,
    },
    {
      name: "8-bit rol by 9 rotates by 1",
      asm: "rol al, cl",
      regs: { eax: 0x81, ecx: 9 },
      want: { eax: 0x03 },
      flags: "CF",
      undef: OF,
    },
    {
      name: "rcl through carry",
      asm: "stc\nrcl eax, 1",
      regs: { eax: 0x80000000 },
      want: { eax: 1 },
      flags: "CF OF",
    },
    {
      name: "rcr through carry",
      asm: "clc\nrcr ebx, 1",
      regs: { ebx: 1 },
      want: { ebx: 0 },
      flags: "CF -OF",
    },
    {
      name: "rcl 16-bit by 17 is a full turn",
      asm: "clc\nrcl ax, cl",
      regs: { eax: 0x1234, ecx: 17 },
      want: { eax: 0x1234 },
      flags: "-CF",
      undef: OF,
    },
    {
      name: "shld and shrd",
      asm: "shld eax, ebx, 8\nshrd ecx, edx, 4",
      regs: { eax: 0x12345678, ebx: 0x9abcdef0, ecx: 0x00000018, edx: 0x00000003 },
      want: { eax: 0x3456789a, ecx: 0x30000001 },
      flags: "CF -SF -ZF -PF",
      undef: AF | OF,
    },
  ],
  muldiv: [
    {
      name: "mul sets CF OF when the high half is used",
      asm: "mul ebx",
      regs: { eax: 0x80000000, ebx: 4 },
      want: { eax: 0, edx: 2 },
      flags: "CF OF",
      undef: MUL_UNDEF,
    },
    {
      name: "8-bit mul",
      asm: "mul bl",
      regs: { eax: 0x12345610, ebx: 0x10 },
      want: { eax: 0x12340100 },
      flags: "CF OF",
      undef: MUL_UNDEF,
    },
    {
      name: "imul one-operand signed",
      asm: "imul ebx",
      regs: { eax: 0xfffffffe, ebx: 3 },
      want: { eax: 0xfffffffa, edx: 0xffffffff },
      flags: "-CF -OF",
      undef: MUL_UNDEF,
    },
    {
      name: "imul three-operand",
      asm: "imul ecx, edx, -3",
      regs: { edx: 7 },
      want: { ecx: 0xffffffeb },
      flags: "-CF -OF",
      undef: MUL_UNDEF,
    },
    {
      name: "imul two-operand overflow",
      asm: "imul eax, ebx",
      regs: { eax: 0x10000, ebx: 0x10000 },
      want: { eax: 0 },
      flags: "CF OF",
      undef: MUL_UNDEF,
    },
    {
      name: "div 64/32",
      asm: "div ebx",
      regs: { eax: 5, edx: 1, ebx: 0x10 },
      want: { eax: 0x10000000, edx: 5 },
      undef: 0x8d5,
    },
    {
      name: "idiv rounds toward zero",
      asm: "cdq\nidiv ebx",
      regs: { eax: 0xfffffff9, ebx: 2 },
      want: { eax: 0xfffffffd, edx: 0xffffffff },
      undef: 0x8d5,
    },
    {
      name: "div 16/8",
      asm: "div bl",
      regs: { eax: 0x0107, ebx: 0x10 },
      want: { eax: 0x0710 },
      undef: 0x8d5,
    },
    {
      name: "div by zero raises #DE at the instruction",
      asm: "div ebx",
      regs: { eax: 1, ebx: 0 },
      want: { eax: 1 },
      vector: 0,
      errorCode: 0,
      eipOffset: 0,
    },
    {
      name: "div quotient overflow raises #DE",
      asm: "div ebx",
      regs: { eax: 0, edx: 1, ebx: 1 },
      want: { eax: 0, edx: 1 },
      vector: 0,
      eipOffset: 0,
    },
    {
      name: "idiv INT_MIN / -1 raises #DE",
      asm: "idiv ebx",
      regs: { eax: 0x80000000, edx: 0xffffffff, ebx: 0xffffffff },
      want: { eax: 0x80000000 },
      vector: 0,
      eipOffset: 0,
    },
  ],
  bit: [
    {
      name: "bt bts btr btc",
      asm: "bt eax, 4\nbts eax, 0\nbtr eax, 4\nbtc eax, ecx",
      regs: { eax: 0x10, ecx: 31 },
      want: { eax: 0x80000001 },
      flags: "-CF",
      undef: BT_UNDEF,
    },
    {
      name: "bt leaves ZF alone",
      asm: "xor edx, edx\nbt eax, 0",
      regs: { eax: 1 },
      flags: "CF ZF",
      undef: BT_UNDEF,
    },
    {
      name: "bts on memory addresses beyond the dword",
      asm: "bts dword [DATA+16], ecx\nbtr dword [DATA+16], ebx\nbtc word [DATA+16], 3",
      regs: { ecx: 35, ebx: -1 },
      data: { 12: u32s(0xffffffff, 0, 0) },
      wantData: { 12: u32s(0x7fffffff, 8, 8) },
      flags: "-CF",
      undef: BT_UNDEF,
    },
    {
      name: "bsf and bsr",
      asm: "bsf eax, ebx\nbsr ecx, ebx",
      regs: { ebx: 0xf0 },
      want: { eax: 4, ecx: 7 },
      flags: "-ZF",
      undef: CF | OF | SF | AF | PF,
    },
    {
      name: "bsf of zero sets ZF",
      asm: "bsf eax, ebx",
      regs: { eax: 0x1234, ebx: 0 },
      flags: "ZF",
      ignoreRegs: ["eax"],
      undef: CF | OF | SF | AF | PF,
    },
    {
      name: "setcc after a signed/unsigned compare",
      asm: [
        "cmp eax, ebx",
        "setl [DATA+0]",
        "setg [DATA+1]",
        "seta [DATA+2]",
        "setb [DATA+3]",
        "setz [DATA+4]",
        "sets [DATA+5]",
        "seto [DATA+6]",
        "setp [DATA+7]",
        "setle [DATA+8]",
        "setae [DATA+9]",
        "setbe [DATA+10]",
        "setge [DATA+11]",
        "setno [DATA+12]",
        "setnp [DATA+13]",
        "setns [DATA+14]",
        "setnz [DATA+15]",
      ].join("\n"),
      regs: { eax: 0xffffffff, ebx: 1 },
      wantData: { 0: bytes(1, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1) },
    },
    {
      name: "cmovcc moves only when the condition holds",
      asm: "cmp eax, ebx\ncmovl ecx, ebx\ncmovg edx, ebx\ncmovb esi, [DATA]\ncmovae edi, [DATA]",
      regs: { eax: 1, ebx: 2, edx: 0x55, edi: 0x66 },
      data: { 0: u32s(0xcafe) },
      want: { ecx: 2, edx: 0x55, esi: 0xcafe, edi: 0x66 },
    },
  ],
  atomic: [
    {
      name: "cmpxchg success stores and sets ZF",
      asm: "lock cmpxchg [DATA], ecx",
      regs: { eax: 5, ecx: 9 },
      data: { 0: u32s(5) },
      want: { eax: 5 },
      wantData: { 0: u32s(9) },
      flags: "ZF PF -CF -SF -OF -AF",
    },
    {
      name: "cmpxchg failure loads the accumulator",
      asm: "cmpxchg [DATA], ecx",
      regs: { eax: 4, ecx: 9 },
      data: { 0: u32s(5) },
      want: { eax: 5 },
      wantData: { 0: u32s(5) },
      flags: "CF SF AF PF -ZF -OF",
    },
    {
      name: "cmpxchg8b success and failure",
      asm: "lock cmpxchg8b [DATA]\nmov esi, eax\nmov edi, edx\ncmpxchg8b [DATA+8]",
      regs: { eax: 1, edx: 2, ebx: 0x33, ecx: 0x44 },
      data: { 0: u32s(1, 2, 7, 8) },
      want: { esi: 1, edi: 2, eax: 7, edx: 8 },
      wantData: { 0: u32s(0x33, 0x44, 7, 8) },
      flags: "-ZF",
    },
    {
      // SDM vol. 2A CMPXCHG8B: "The ZF flag is set ...; the CF, PF, AF, SF, and OF flags are
      // unaffected." (QEMU 7.2 sets CF: it sits this out.)
      name: "cmpxchg8b writes ZF only, on failure and on success",
      asm: "add eax, 1\nstc\ncmpxchg8b [DATA]\nmov esi, eax\nlock cmpxchg8b [DATA]",
      regs: { eax: 0x7fffffff, edx: 0, ebx: 0x33, ecx: 0x44 },
      want: { esi: 0, eax: 0, edx: 0 },
      wantData: { 0: u32s(0x33, 0x44) },
      flags: "CF PF AF SF OF ZF",
      needs: ["cmpxchg8b"],
    },
    {
      name: "xadd exchanges and adds",
      asm: "lock xadd [DATA], eax\nxadd ebx, ecx",
      regs: { eax: 3, ebx: 0xffffffff, ecx: 1 },
      data: { 0: u32s(10) },
      want: { eax: 10, ebx: 0, ecx: 0xffffffff },
      wantData: { 0: u32s(13) },
      flags: "CF ZF PF AF -SF -OF",
    },
    {
      name: "bswap",
      asm: "bswap eax\nbswap edi",
      regs: { eax: 0x12345678, edi: 0x000000ff },
      want: { eax: 0x78563412, edi: 0xff000000 },
    },
  ],
  string: [
    {
      name: "rep movsd copies forward",
      asm: "mov esi, DATA\nmov edi, DATA+0x100\nrep movsd",
      regs: { ecx: 4 },
      data: { 0: u32s(1, 2, 3, 4, 5) },
      want: { ecx: 0, esi: 0x500010, edi: 0x500110 },
      wantData: { 256: u32s(1, 2, 3, 4, 0) },
    },
    {
      name: "std rep movsb copies backward",
      asm: "std\nmov esi, DATA+7\nmov edi, DATA+0x20f\nrep movsb\ncld",
      regs: { ecx: 8 },
      data: { 0: ascii("ABCDEFGH") },
      want: { ecx: 0, esi: 0x4fffff, edi: 0x500207 },
      wantData: { 520: ascii("ABCDEFGH") },
    },
    {
      name: "rep stosd fills",
      asm: "mov edi, DATA+0x40\nrep stosd",
      regs: { eax: 0xdeadbeef, ecx: 3 },
      want: { edi: 0x50004c, ecx: 0 },
      wantData: { 64: u32s(0xdeadbeef, 0xdeadbeef, 0xdeadbeef, 0) },
    },
    {
      name: "repne scasb finds the terminator",
      asm: "mov edi, DATA\nxor eax, eax\nmov ecx, -1\nrepne scasb",
      data: { 0: ascii("hello\0") },
      want: { ecx: 0xfffffff9, edi: 0x500006 },
      flags: "ZF PF -CF -SF -OF -AF",
    },
    {
      name: "repe cmpsb stops at the first difference",
      asm: "mov esi, DATA\nmov edi, DATA+16\nmov ecx, 8\nrepe cmpsb",
      data: { 0: ascii("abcXefgh"), 16: ascii("abcYefgh") },
      want: { ecx: 4, esi: 0x500004, edi: 0x500014 },
      flags: "CF SF AF PF -ZF -OF",
    },
    {
      name: "rep with ecx=0 does nothing; lodsd and stosw",
      asm: "mov edi, DATA+0x80\nrep stosb\nmov esi, DATA\nlodsd\nmov edi, DATA+0x90\nstosw",
      regs: { ecx: 0, eax: 0x11 },
      data: { 0: u32s(0xa1b2c3d4) },
      want: { eax: 0xa1b2c3d4, esi: 0x500004, edi: 0x500092, ecx: 0 },
      wantData: { 128: u32s(0), 144: u32s(0x0000c3d4) },
    },
  ],
  misc: [
    {
      name: "AAA AAS AAM AAD adjust unpacked BCD",
      asm: "mov ax, 0x0109\nadd al, 5\naaa\nmov bx, ax\nmov ax, 0x0203\nsub al, 5\naas\nmov cx, ax\nmov al, 79\naam\nmov dx, ax\naad",
      want: { eax: 0x4f, ebx: 0x0204, ecx: 0x0108, edx: 0x0709 },
      undef: OF | SF | ZF | PF,
      needs: ["bcd"],
    },
    {
      name: "AAM 0 raises #DE",
      asm: "aam 0",
      regs: { eax: 0x1234 },
      want: { eax: 0x1234 },
      vector: 0,
      eipOffset: 0,
    },
    {
      name: "INTO with OF set raises #OF as a trap (EIP after INTO)",
      asm: "mov eax, 0x7fffffff\nadd eax, 1\ninto",
      want: { eax: 0x80000000 },
      vector: 4,
      eipOffset: 9,
      errorCode: 0,
      needs: ["into"],
    },
    {
      name: "BOUND out of range raises #BR at the instruction",
      asm: "bound eax, [DATA]",
      regs: { eax: 11 },
      data: { 0: u32s(0, 10) },
      vector: 5,
      eipOffset: 0,
      errorCode: 0,
      needs: ["bound"],
    },
    {
      name: "UD2 raises #UD; an unmapped access raises #PF with CR2",
      asm: "ud2",
      vector: 6,
      eipOffset: 0,
      errorCode: 0,
    },
    {
      name: "a ring-3 write below the snippet's memory raises #PF (U/S, W) with CR2",
      asm: "mov dword [0x1004], 1",
      vector: 14,
      errorCode: 6,
      // P differs by runner: supervisor pages under KVM and the soft runner, unmapped in a process.
      errorMask: ~1,
      eipOffset: 0,
    },
    {
      name: "a ring-3 read above the stack raises #PF (U/S) with CR2",
      asm: "mov eax, [0x600010]",
      vector: 14,
      errorCode: 4,
      errorMask: ~1,
      eipOffset: 0,
    },
    {
      name: "REP MOVSD faulting on the page after the stack leaves ECX/ESI/EDI at the faulting iteration",
      asm: "mov esi, DATA\nmov edi, 0x5ffff0\nmov ecx, 10\nrep movsd",
      data: { 0: u32s(1, 2, 3, 4, 5, 6) },
      want: { ecx: 6, esi: 0x500010, edi: 0x600000 },
      vector: 14,
      errorCode: 6,
      errorMask: ~1,
      eipOffset: 15,
    },
    {
      name: "STD REP STOSB faulting below the code page stops precisely",
      asm: "std\nmov edi, 0x400003\nmov ecx, 8\nrep stosb",
      regs: { eax: 0x90 },
      want: { ecx: 4, edi: 0x3fffff },
      vector: 14,
      errorCode: 6,
      errorMask: ~1,
      eipOffset: 11,
      flags: "DF",
    },
    {
      name: "a PUSH that faults leaves ESP unchanged",
      asm: "mov esp, 0x400002\npush eax",
      want: { esp: 0x400002 },
      vector: 14,
      errorCode: 6,
      errorMask: ~1,
      eipOffset: 5,
    },
  ],
  stack: [
    {
      name: "push and pop registers, immediates and memory",
      asm: "push eax\npush 0x12\npush dword [DATA]\npush word 0x1234\npop bx\npop ecx\npop edx\npop dword [DATA+4]",
      regs: { eax: 0xaabbccdd },
      data: { 0: u32s(0x55) },
      want: { ebx: 0x1234, ecx: 0x55, edx: 0x12, esp: 0x600000 },
      wantData: { 4: u32s(0xaabbccdd) },
    },
    {
      name: "pushad and popad round-trip",
      asm: "pushad\nmov eax, 0\nmov ebx, 0\nmov ebp, 0\npopad",
      regs: { eax: 1, ecx: 2, edx: 3, ebx: 4, ebp: 6, esi: 7, edi: 8 },
      want: { eax: 1, ecx: 2, edx: 3, ebx: 4, esp: 0x600000, ebp: 6, esi: 7, edi: 8 },
    },
    {
      name: "pushfd shows the reserved bit; popfd in ring 3 with IOPL 0 cannot change IF",
      // IF is 0 under the KVM oracle and the soft runner, 1 in a host process: the case checks
      // that POPFD left it unchanged (EBX = 0) and shows the other bits (EAX without IF).
      asm: [
        "stc",
        "pushfd",
        "pop eax",
        "mov ecx, eax",
        "xor ecx, 0x200",
        "push ecx",
        "popfd",
        "pushfd",
        "pop ebx",
        "xor ebx, eax",
        "and eax, ~0x200",
        "and ecx, ~0x200",
      ].join("\n"),
      want: { eax: 0x3, ebx: 0, ecx: 0x3 },
      flags: "-CF",
      undef: AF,
    },
    {
      name: "a fault pushes EFLAGS with RF set (SDM vol. 3 17.3.1.1)",
      asm: "nop",
      flags: "RF",
      needs: ["rf"],
    },
    {
      name: "call pushes the return address; ret imm16 pops it and the arguments",
      asm: "push 7\ncall f\njmp done\nf: mov eax, [esp]\nmov ebx, [esp+4]\nret 4\ndone:",
      want: { eax: 0x400007, ebx: 7, esp: 0x600000 },
    },
    {
      name: "enter and leave build and drop a frame",
      asm: [
        "mov dword [0x5ffefc], 0x77",
        "enter 16, 0",
        "mov eax, ebp",
        "mov ebx, esp",
        "leave",
        "enter 8, 2",
        "mov ecx, esp",
        "mov edx, [esp+8]",
        "mov esi, [esp+12]",
        "leave",
      ].join("\n"),
      regs: { ebp: 0x5fff00 },
      want: {
        eax: 0x5ffffc,
        ebx: 0x5fffec,
        ecx: 0x5fffec,
        edx: 0x5ffffc,
        esi: 0x77,
        ebp: 0x5fff00,
        esp: 0x600000,
      },
      needs: ["enter-nested"],
    },
  ],
  x87: [
    {
      name: "fadd in double precision equals IEEE double",
      asm: "fninit\nfldcw [DATA+0x40]\nfld qword [DATA]\nfadd qword [DATA+8]\nfstp qword [DATA+16]\nfnstsw [DATA+24]",
      data: { 0: f64(0.1), 8: f64(0.2), 64: u16s(0x027f) },
      wantData: { 16: f64(0.1 + 0.2), 24: u16s(0x0020) },
    },
    {
      name: "constants and 1/3 in extended precision, stored as m80",
      asm: [
        "fninit",
        "fld1",
        "fstp tword [DATA]",
        "fldpi",
        "fstp tword [DATA+16]",
        "fldl2e",
        "fstp tword [DATA+32]",
        "fld1",
        "fidiv dword [DATA+0x80]",
        "fstp tword [DATA+48]",
        "fldln2",
        "fstp tword [DATA+64]",
      ].join("\n"),
      data: { 128: u32s(3) },
      wantData: {
        0: hex("0000000000000080ff3f"),
        16: hex("35c26821a2da0fc90040"),
        32: hex("bcf0175c293baab8ff3f"),
        48: hex("abaaaaaaaaaaaaaafd3f"),
        64: hex("ac79cfd1f71772b1fe3f"),
      },
    },
    {
      name: "fild/fistp of a 64-bit integer is exact; fist rounds per RC",
      asm: [
        "fninit",
        "fild qword [DATA]",
        "fistp qword [DATA+8]",
        "fld qword [DATA+0x10]",
        "fist dword [DATA+0x18]",
        "fldcw [DATA+0x40]",
        "fist dword [DATA+0x1c]",
        "fldcw [DATA+0x42]",
        "fistp dword [DATA+0x20]",
      ].join("\n"),
      data: { 0: hex("f1debc9a78563412"), 16: f64(-2.5), 64: u16s(0x077f, 0x0b7f) },
      wantData: { 8: hex("f1debc9a78563412"), 24: u32s(-2, -3, -2) },
    },
    {
      name: "fcom and fnstsw ax, fcomi sets EFLAGS",
      asm: [
        "fninit",
        "fld qword [DATA+8]",
        "fld qword [DATA]",
        "fcom st1",
        "fnstsw ax",
        "mov ebx, eax",
        "fcomi st0, st1",
        "lahf", // SF ZF 0 AF 0 PF 1 CF: the flags FCOMI wrote
        "movzx ecx, ah",
        "fxch",
        "fucomip st0, st1",
        "fstp st0",
        "fnstsw ax",
      ].join("\n"),
      data: { 0: f64(1), 8: f64(2) },
      want: { ebx: 0x3100, ecx: 0x3 },
      // FXCH and FSTP leave C0 C2 C3 undefined: the last FNSTSW is not compared.
      ignoreRegs: ["eax"],
    },
    {
      name: "fsqrt, fdivr, fsubr and fmul with reverse forms",
      asm: [
        "fninit",
        "fld qword [DATA]",
        "fsqrt",
        "fstp tword [DATA+0x20]",
        "fld qword [DATA]",
        "fld qword [DATA+8]",
        "fdivr st1, st0",
        "fsubrp st1, st0",
        "fmul qword [DATA]",
        "fstp qword [DATA+0x30]",
      ].join("\n"),
      data: { 0: f64(2), 8: f64(8) },
      wantData: { 32: hex("8464def933f304b5ff3f"), 48: f64((8 - 8 / 2) * 2) },
    },
    {
      name: "fxam classes, stack overflow and the tag word",
      asm: [
        "fninit",
        "fldz",
        "fxam",
        "fnstsw [DATA]",
        "fld qword [DATA+0x40]",
        "fxam",
        "fnstsw [DATA+2]",
        "fld qword [DATA+0x48]",
        "fxam",
        "fnstsw [DATA+4]",
        "fld1",
        "fxam",
        "fnstsw [DATA+6]",
        "fld dword [DATA+0x50]",
        "fxam",
        "fnstsw [DATA+8]",
        "fld1",
        "fld1",
        "fld1",
        "fld1",
        "fnstsw [DATA+10]",
        "fnstenv [DATA+0x60]",
      ].join("\n"),
      // zero (R7), NaN, -infinity, normal, a single denormal (normal in extended, DE), then the
      // fourth push overflows onto R7: IE SF C1, the indefinite in R7.
      data: { 64: f64(Number.NaN), 72: f64(Number.NEGATIVE_INFINITY), 80: u32s(1) },
      wantData: {
        0: u16s(0x7800, 0x3100, 0x2f00, 0x2400, 0x1c02, 0x3e43),
        96: u16s(0x037f),
        100: u16s(0x3e43),
        104: u16s(0xa800),
      },
      ignoreData: [[0x6c, 16]],
    },
    {
      name: "frndint in every rounding mode",
      asm: [
        "fninit",
        "fld qword [DATA]",
        "frndint",
        "fstp qword [DATA+0x10]",
        "fldcw [DATA+0x40]",
        "fld qword [DATA]",
        "frndint",
        "fstp qword [DATA+0x18]",
        "fldcw [DATA+0x42]",
        "fld qword [DATA]",
        "frndint",
        "fstp qword [DATA+0x20]",
        "fldcw [DATA+0x44]",
        "fld qword [DATA]",
        "frndint",
        "fstp qword [DATA+0x28]",
        "fnstsw [DATA+0x30]",
      ].join("\n"),
      data: { 0: f64(-2.5), 64: u16s(0x077f, 0x0b7f, 0x0f7f) },
      wantData: { 16: new Uint8Array([...f64(-2), ...f64(-3), ...f64(-2), ...f64(-2)]), 48: u16s(0x0020) },
    },
    {
      name: "fbstp and fbld",
      asm: "fninit\nfld qword [DATA]\nfbstp [DATA+0x10]\nfbld [DATA+0x10]\nfchs\nfstp qword [DATA+0x20]",
      data: { 0: f64(-123456789012) },
      wantData: { 16: hex("12907856341200000080"), 32: f64(123456789012) },
    },
    {
      name: "fprem loops to fmod; fprem1; fscale; fxtract",
      asm: [
        "fninit",
        "fld qword [DATA+8]",
        "fld qword [DATA]",
        "again: fprem",
        "fnstsw ax",
        "test ah, 4",
        "jnz again",
        "fstp qword [DATA+0x10]",
        "fld qword [DATA+0x40]",
        "fprem1",
        "fstp qword [DATA+0x18]",
        "fld qword [DATA+0x48]",
        "fscale",
        "fstp qword [DATA+0x20]",
        "fld qword [DATA+0x50]",
        "fxtract",
        "fstp qword [DATA+0x28]",
        "fstp qword [DATA+0x30]",
        "fstp st0",
      ].join("\n"),
      data: { 0: f64(1e300), 8: f64(3), 64: f64(11), 72: f64(1.25), 80: f64(-24) },
      wantData: {
        16: f64(1e300 % 3),
        24: f64(-1),
        32: f64(10),
        40: f64(-1.5),
        48: f64(4),
      },
      ignoreRegs: ["eax"],
    },
    {
      name: "transcendental functions to float32 accuracy",
      asm: [
        "fninit",
        "fld qword [DATA+0x40]",
        "fsin",
        "fstp dword [DATA]",
        "fld qword [DATA+0x40]",
        "fcos",
        "fstp dword [DATA+4]",
        "fld qword [DATA+0x40]",
        "fptan",
        "fstp st0",
        "fstp dword [DATA+8]",
        "fld qword [DATA+0x48]",
        "fld qword [DATA+0x40]",
        "fpatan",
        "fstp dword [DATA+12]",
        "fld1",
        "fld qword [DATA+0x48]",
        "fyl2x",
        "fstp dword [DATA+16]",
        "fld qword [DATA+0x40]",
        "f2xm1",
        "fstp dword [DATA+20]",
        "fld qword [DATA+0x40]",
        "fsincos",
        "fstp dword [DATA+24]",
        "fstp dword [DATA+28]",
        "fld1",
        "fld qword [DATA+0x40]",
        "fyl2xp1",
        "fstp dword [DATA+32]",
      ].join("\n"),
      data: { 64: f64(0.5), 72: f64(8) },
      floats: [
        { offset: 0, want: Math.sin(0.5), ulps: 1 },
        { offset: 4, want: Math.cos(0.5), ulps: 1 },
        { offset: 8, want: Math.tan(0.5), ulps: 1 },
        { offset: 12, want: Math.atan2(8, 0.5), ulps: 1 },
        { offset: 16, want: 3, ulps: 0 },
        { offset: 20, want: Math.SQRT2 - 1, ulps: 1 },
        { offset: 24, want: Math.cos(0.5), ulps: 1 },
        { offset: 28, want: Math.sin(0.5), ulps: 1 },
        { offset: 32, want: Math.log2(1.5), ulps: 1 },
      ],
    },
    {
      name: "fnsave/frstor and fxsave/fxrstor round-trip the stack",
      asm: [
        "fninit",
        "fldpi",
        "fld1",
        "fnsave [DATA+0x100]",
        "fnstsw [DATA]",
        "frstor [DATA+0x100]",
        "fxsave [DATA+0x200]",
        "fninit",
        "fxrstor [DATA+0x200]",
        "fstp tword [DATA+0x10]",
        "fstp tword [DATA+0x20]",
      ].join("\n"),
      wantData: {
        0: u16s(0),
        16: hex("0000000000000080ff3f"),
        32: hex("35c26821a2da0fc90040"),
        256: u16s(0x037f),
        260: u16s(0x3000),
        264: u16s(0x0fff),
        284: hex("0000000000000080ff3f 35c26821a2da0fc90040"),
        512: u16s(0x037f, 0x3000),
        516: bytes(0xc0),
        544: hex("0000000000000080ff3f"),
        560: hex("35c26821a2da0fc90040"),
      },
      // Instruction and data pointers (FIP, FCS, FOP, FDP) depend on the runner's code segment;
      // empty registers hold stale contents; MXCSR is the host's.
      ignoreData: [
        [0x10c, 16],
        [0x130, 60],
        [0x206, 18],
        [0x218, 8],
        [0x22a, 6],
        [0x23a, 6],
        [0x240, 0x1c0],
      ],
    },
    {
      name: "an unmasked zero divide raises #MF at the next waiting x87 instruction",
      asm: [
        "fninit",
        "fldcw [DATA+0x40]",
        "fld1",
        "fldz",
        "fdivp st1, st0",
        "fnstsw [DATA]",
        "fnstcw [DATA+2]",
        "mov ebx, 7",
        "next_fp: fld1",
      ].join("\n"),
      data: { 64: u16s(0x037b) },
      want: { ebx: 7 },
      wantData: { 0: u16s(0xb084, 0x037b) },
      vector: 16,
      errorCode: 0,
      needs: ["x87-unmasked"],
    },
    {
      name: "stack underflow and overflow set IE SF and C1; FIST of a NaN stores the integer indefinite",
      asm: [
        "fninit",
        "fadd st0, st3",
        "fnstsw [DATA]",
        "fstp tword [DATA+0x10]",
        "fnclex",
        "fld1",
        "fld1",
        "fld1",
        "fld1",
        "fld1",
        "fld1",
        "fld1",
        "fld1",
        "fldpi",
        "fnstsw [DATA+2]",
        "fstp tword [DATA+0x20]",
        "fninit",
        "fld dword [DATA+0x40]",
        "fistp dword [DATA+0x30]",
        "fld dword [DATA+0x40]",
        "fistp word [DATA+0x34]",
        "fnstsw [DATA+4]",
      ].join("\n"),
      data: { 64: u32s(0x7fc00000) },
      wantData: {
        0: u16s(0x0041, 0x0241, 0x0001),
        16: hex("00000000000000c0ffff"),
        32: hex("00000000000000c0ffff"),
        48: u32s(0x80000000),
        52: u16s(0x8000),
      },
    },
    {
      name: "FXCH, FST ST(i), FFREE, FINCSTP/FDECSTP and FCMOVcc move the right registers",
      asm: [
        "fninit",
        "fld1",
        "fldpi",
        "fldz",
        "fxch st2",
        "fst st1",
        "ffree st2",
        "fincstp",
        "fdecstp",
        "fnstenv [DATA+0x40]",
        "mov eax, 1",
        "cmp eax, 2",
        "fcmovb st0, st1",
        "fstp tword [DATA]",
        "fstp tword [DATA+0x10]",
        "fnstsw [DATA+0x20]",
      ].join("\n"),
      wantData: {
        0: hex("0000000000000080ff3f 000000000000"),
        16: hex("0000000000000080ff3f"),
        72: u16s(0xc3ff),
      },
      ignoreData: [[0x4c, 16]],
      undef: AF,
    },
  ],
};

// Every x87 case needs an x87 in the runner, and (unless it says otherwise) its code means the
// same in 64-bit mode, so the host CPU runs it in a 64-bit process too.
for (const c of GROUPS.x87 ?? []) {
  c.needs = ["x87", ...(c.needs ?? [])];
  c.sameIn64 ??= true;
}
