/**
 * The sensitive and privileged instructions (SDM vol. 3 ch. 2.8 and ch. 5.9; Popek and Goldberg's
 * sensitive set for x86) that translated code reaches through a direct call into the VMM's
 * handler (the interpreter's handler, whose privilege checks go through `privilege.ts`), by kind,
 * so `--stats` shows which of them the guest kernel used and how often.
 */
import type { Insn } from "../insn.js";

const GRP7 = ["sgdt/vmcall", "sidt", "lgdt", "lidt/vmmcall", "smsw", "", "lmsw", "invlpg"];
const GRP6 = ["sldt", "str", "lldt", "ltr", "verr", "verw"];

/** The kind of sensitive instruction `i` is, or undefined for an ordinary one. */
export function vmmCallKind(i: Insn): string | undefined {
  const op = i.opcode;
  switch (op) {
    case 0x0f01:
      return GRP7[i.reg] || undefined;
    case 0x0f00:
      return GRP6[i.reg];
    case 0x0f20:
    case 0x0f22:
      return "mov cr";
    case 0x0f21:
    case 0x0f23:
      return "mov dr";
    case 0x0f30:
      return "wrmsr";
    case 0x0f32:
      return "rdmsr";
    case 0x0f31:
      return "rdtsc";
    case 0x0fa2:
      return "cpuid";
    case 0x0f06:
      return "clts";
    case 0x0f08:
    case 0x0f09:
      return "invd";
    case 0x0f02:
    case 0x0f03:
      return "lar/lsl";
    case 0x0f34:
      return "sysenter";
    case 0x0f35:
      return "sysexit";
    case 0xfa:
      return "cli";
    case 0xfb:
      return "sti";
    case 0x9c:
      return "pushf";
    case 0x9d:
      return "popf";
    case 0xf4:
      return "hlt";
    case 0xcf:
      return "iret";
    case 0xcc:
    case 0xcd:
    case 0xce:
      return "int";
    case 0xe4:
    case 0xe5:
    case 0xec:
    case 0xed:
      return "in";
    case 0xe6:
    case 0xe7:
    case 0xee:
    case 0xef:
      return "out";
    case 0x6c:
    case 0x6d:
      return "ins";
    case 0x6e:
    case 0x6f:
      return "outs";
    case 0x8e:
      return "mov sreg";
    case 0x07:
    case 0x17:
    case 0x1f:
    case 0x0fa1:
    case 0x0fa9:
      return "pop sreg";
    case 0xea:
    case 0x9a:
      return "far jmp/call";
    case 0xca:
    case 0xcb:
      return "far ret";
    case 0xff:
      return i.reg === 3 || i.reg === 5 ? "far jmp/call" : undefined;
    default:
      return undefined;
  }
}
