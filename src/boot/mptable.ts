import type { GuestMemory } from "../memory/guest_memory.js";
import { APIC_START, EBDA_START, IOAPIC_START, MPTABLE_START } from "../memory/layout.js";
import { acpiChecksum, leBytes } from "./acpi.js";
import { BootError } from "./boot_error.js";

/**
 * Intel MultiProcessor Specification 1.4 tables (chapter 4), for an SMP guest booted without
 * ACPI (`acpi=off`): the MP Floating Pointer Structure ("_MP_", 16 bytes) at MPTABLE_START,
 * where Linux's smp_scan_config looks (the last KiB of base memory, 639 KiB = 0x9fc00), followed
 * by the MP Configuration Table ("PCMP"): processors, the ISA bus, the IOAPIC, I/O interrupt
 * assignments for ISA IRQs 0-15 and the local interrupt assignments (ExtINT on LINT0, NMI on LINT1).
 * Linux ignores the MP table when ACPI's MADT is present.
 */

/** Entry types (MP spec 4.3). */
const MP_PROCESSOR = 0;
const MP_BUS = 1;
const MP_IOAPIC = 2;
const MP_IOINTR = 3;
const MP_LINTR = 4;
/** Interrupt types (Table 4-9). */
const MP_INT = 0;
const MP_NMI = 1;
const MP_EXTINT = 3;
const APIC_VERSION = 0x14; // integrated local APIC (as QEMU and Firecracker report)
const IOAPIC_VERSION = 0x11;
const BUS_ISA = 0;

export function buildMpTable(cpus: number, ioapicId = cpus, at = MPTABLE_START): Uint8Array {
  if (cpus < 1 || cpus > 254)
    throw new BootError("BOOT_BAD_CPUS", `cannot describe ${cpus} CPUs in the MP table`);
  const { bytes: entries, u8, u16, u32 } = leBytes();
  let count = 0;
  for (let cpu = 0; cpu < cpus; cpu++) {
    // Processor entry (4.3.1), 20 bytes.
    u8(MP_PROCESSOR);
    u8(cpu); // local APIC id
    u8(APIC_VERSION);
    u8(0x01 | (cpu === 0 ? 0x02 : 0)); // CPU flags: EN, BP for the bootstrap processor
    u32(0x600); // CPU signature: family 6
    u32(0x201); // feature flags: FPU (bit 0), APIC (bit 9)
    u32(0);
    u32(0);
    count++;
  }
  // Bus entry (4.3.2), 8 bytes.
  u8(MP_BUS);
  u8(BUS_ISA);
  for (const c of "ISA   ") u8(c.charCodeAt(0));
  count++;
  // I/O APIC entry (4.3.3), 8 bytes.
  u8(MP_IOAPIC);
  u8(ioapicId);
  u8(IOAPIC_VERSION);
  u8(0x01); // EN
  u32(IOAPIC_START);
  count++;
  // I/O interrupt assignments (4.3.4): the 8259's output on INTIN0 (ExtINT), ISA IRQ0 on INTIN2,
  // ISA IRQ n on INTIN n otherwise; flags 0 = conforms to the bus (ISA: edge, active high).
  const ioint = (type: number, srcIrq: number, intin: number): void => {
    u8(MP_IOINTR);
    u8(type);
    u16(0);
    u8(BUS_ISA);
    u8(srcIrq);
    u8(ioapicId);
    u8(intin);
    count++;
  };
  ioint(MP_EXTINT, 0, 0);
  ioint(MP_INT, 0, 2);
  for (let irq = 1; irq < 16; irq++) if (irq !== 2) ioint(MP_INT, irq, irq);
  // Local interrupt assignments (4.3.5): ExtINT on LINT0, NMI on LINT1, all local APICs (0xff).
  const lint = (type: number, lintin: number): void => {
    u8(MP_LINTR);
    u8(type);
    u16(0);
    u8(BUS_ISA);
    u8(0);
    u8(0xff);
    u8(lintin);
    count++;
  };
  lint(MP_EXTINT, 0);
  lint(MP_NMI, 1);

  const configAddr = at + 16;
  const config = new Uint8Array(44 + entries.length);
  const cdv = new DataView(config.buffer);
  // Configuration table header (4.2, Table 4-2), 44 bytes.
  config.set(new TextEncoder().encode("PCMP"), 0);
  cdv.setUint16(4, config.length, true); // base table length
  config[6] = 4; // spec revision 1.4
  config.set(new TextEncoder().encode("VESSEL  "), 8); // OEM ID (8)
  config.set(new TextEncoder().encode("VESSELVM    "), 16); // product ID (12)
  cdv.setUint16(34, count, true); // entry count
  cdv.setUint32(36, APIC_START, true); // address of local APIC
  config.set(entries, 44);
  config[7] = acpiChecksum(config);

  // Floating pointer structure (4.1, Table 4-1), 16 bytes; feature byte 1 = 0: a table is present.
  const fp = new Uint8Array(16);
  fp.set(new TextEncoder().encode("_MP_"), 0);
  new DataView(fp.buffer).setUint32(4, configAddr, true);
  fp[8] = 1; // length in 16-byte units
  fp[9] = 4; // spec revision 1.4
  fp[10] = acpiChecksum(fp);

  const out = new Uint8Array(16 + config.length);
  out.set(fp, 0);
  out.set(config, 16);
  return out;
}

/** True when the MP table for `cpus` CPUs fits in the EBDA between MPTABLE_START and 0xa0000. */
export function mpTableFits(cpus: number): boolean {
  return MPTABLE_START + buildMpTable(cpus, cpus).length <= 0xa0000;
}

/** Writes the MP table at MPTABLE_START; it must stay below 1 MiB inside the reserved EBDA area. */
export function writeMpTable(memory: GuestMemory, cpus: number, ioapicId = cpus): number {
  const table = buildMpTable(cpus, ioapicId);
  if (MPTABLE_START < EBDA_START || MPTABLE_START + table.length > 0xa0000) {
    // each processor entry is 20 bytes; the rest of the table does not depend on the CPU count
    const maxCpus = Math.floor((0xa0000 - MPTABLE_START - (table.length - 20 * cpus)) / 20);
    throw new BootError(
      "BOOT_MPTABLE_TOO_BIG",
      `MP table for ${cpus} CPUs does not fit in the EBDA (0x${MPTABLE_START.toString(16)}-0x9ffff): give at most ${maxCpus} CPUs`,
      { cpus, maxCpus },
    );
  }
  memory.write(MPTABLE_START, table);
  return MPTABLE_START;
}
