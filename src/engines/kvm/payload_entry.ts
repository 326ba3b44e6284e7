import type { EntryState, SegmentState } from "../../boot/entry_state.js";

const flat = (selector: number, type: number): SegmentState => ({
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

const system = (type: number): SegmentState => ({
  selector: 0,
  base: 0,
  limit: 0xffff,
  type,
  present: true,
  dpl: 0,
  s: false,
  db: false,
  l: false,
  g: false,
});

/**
 * 32-bit protected mode without paging, flat 4 GiB segments (CS 0x08 execute/read, data 0x10),
 * interrupts off: the state Vessel's own payloads (the oracle kernel, the KVM tests) start from.
 * It is the state of a kernel's 32-bit entry, which PVM accepts; the payload enters long mode
 * itself (payloads/long_mode_entry.inc).
 */
export function flat32Entry(rip: number, rsp = 0x7f000): EntryState {
  return {
    mode: "protected32",
    rip,
    rsp,
    rsi: 0,
    rflags: 2,
    cr0: 0x11, // PE | ET
    cr3: 0,
    cr4: 0,
    efer: 0,
    cs: flat(0x08, 0xb),
    ds: flat(0x10, 0x3),
    es: flat(0x10, 0x3),
    fs: flat(0x10, 0x3),
    gs: flat(0x10, 0x3),
    ss: flat(0x10, 0x3),
    tr: system(0xb),
    ldt: system(0x2),
    gdt: { base: 0, limit: 0xffff },
    idt: { base: 0, limit: 0xffff },
  };
}
