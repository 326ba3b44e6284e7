import type { GuestMemory } from "../memory/guest_memory.js";
import {
  ACPI_TABLES_END,
  ACPI_TABLES_START,
  APIC_START,
  COM1_IRQ,
  COM1_PORT,
  I8042_KBD_IRQ,
  I8042_PORT,
  IOAPIC_START,
  RSDP_START,
  RTC_IRQ,
  RTC_PORT,
} from "../memory/layout.js";
import * as aml from "./aml.js";
import { BootError } from "./boot_error.js";

/**
 * ACPI tables for a Vessel machine (ACPI 6.4 chapter 5): RSDP (v2) -> XSDT (and RSDT) -> FADT,
 * MADT; FADT -> DSDT. The FADT is "hardware-reduced" (flag HW_REDUCED_ACPI, as Firecracker and
 * QEMU's microvm do): no PM1/GPE register blocks, no SCI, which ACPICA in Linux 6.1 accepts
 * (evxfevnt.c acpi_enable: "If the Hardware Reduced flag is set, machine is always in acpi mode").
 * Consequence worth knowing (arch/x86/kernel/acpi/boot.c acpi_generic_reduced_hw_init): Linux then
 * uses no 8259 PIC and no PIT interrupt; it needs the local APIC + IOAPIC, calibrates the TSC by
 * polling PIT channel 2 and the APIC timer against the TSC (apic.c calibrate_APIC_clock). Boot with
 * `acpi=off` (or LinuxBootConfig.acpi = false) for a PIC/PIT machine described by the MP table.
 *
 * The DSDT announces each virtio-mmio device as an `LNRO0005` device with its MMIO window and
 * interrupt (Linux drivers/virtio/virtio_mmio.c virtio_mmio_acpi_match): Debian's kernel has
 * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES off, so ACPI is how it finds them.
 */

export interface VirtioMmioSlot {
  /** Guest-physical base of the 4 KiB register window. */
  base: number;
  size: number;
  /** GSI (IOAPIC input). */
  irq: number;
  /** Trigger mode announced in _CRS; default level-triggered, active-high (the line follows InterruptStatus). */
  edge?: boolean;
}

export interface AcpiConfig {
  cpus: number;
  virtioDevices: readonly VirtioMmioSlot[];
  /** IOAPIC id (MADT and MP table must agree); default = cpus. */
  ioapicId?: number;
}

export interface AcpiResult {
  rsdpAddr: number;
  /** Each table's guest-physical address, by signature ("XSDT", "FACP", "APIC", "DSDT", "RSDT"). */
  tables: Record<string, { addr: number; length: number }>;
}

const OEM_ID = "VESSEL";
const OEM_TABLE_ID = "VESSELVM";
const CREATOR_ID = "VSSL";

/** Sum of all bytes is 0 mod 256: returns the byte that makes it so. */
export function acpiChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (0x100 - sum) & 0xff;
}

/**
 * Little-endian integers appended to one byte list: how the MADT's and the MP table's
 * variable-length entry lists are written.
 */
export function leBytes() {
  const bytes: number[] = [];
  const u8 = (v: number): void => {
    bytes.push(v & 0xff);
  };
  const u16 = (v: number): void => {
    u8(v);
    u8(v >> 8);
  };
  const u32 = (v: number): void => {
    u16(v & 0xffff);
    u16(v >>> 16);
  };
  return { bytes, u8, u16, u32 };
}

function ascii(dst: Uint8Array, off: number, text: string, len: number): void {
  for (let i = 0; i < len; i++) dst[off + i] = i < text.length ? text.charCodeAt(i) : 0x20;
}

/**
 * A system description table: the 36-byte header (5.2.6: Signature, Length, Revision, Checksum,
 * OEMID, OEM Table ID, OEM Revision, Creator ID, Creator Revision) followed by `body`, with the
 * checksum filled in.
 */
export function sdt(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const t = new Uint8Array(36 + body.length);
  const dv = new DataView(t.buffer);
  ascii(t, 0, signature, 4);
  dv.setUint32(4, t.length, true);
  t[8] = revision;
  ascii(t, 10, OEM_ID, 6);
  ascii(t, 16, OEM_TABLE_ID, 8);
  dv.setUint32(24, 1, true);
  ascii(t, 28, CREATOR_ID, 4);
  dv.setUint32(32, 1, true);
  t.set(body, 36);
  t[9] = acpiChecksum(t);
  return t;
}

/** Generic Address Structure (5.2.3.2): space id, bit width, bit offset, access size, address. */
function gas(
  dst: DataView,
  off: number,
  spaceId: number,
  bitWidth: number,
  accessSize: number,
  address: number,
): void {
  dst.setUint8(off, spaceId);
  dst.setUint8(off + 1, bitWidth);
  dst.setUint8(off + 2, 0);
  dst.setUint8(off + 3, accessSize);
  dst.setBigUint64(off + 4, BigInt(address), true);
}

/** FADT flags (5.2.9 Table 5.10) and IA-PC boot architecture flags (Table 5.11). */
const FADT_F_RESET_REG_SUP = 1 << 10;
const FADT_F_HW_REDUCED_ACPI = 1 << 20;
const IAPC_LEGACY_DEVICES = 1 << 0;
const IAPC_8042 = 1 << 1;
const IAPC_VGA_NOT_PRESENT = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED = 1 << 3;

/** FADT revision 6 (ACPI 6.x), 276 bytes. Offsets are those of ACPI 6.4 Table 5.9. */
export function buildFadt(dsdtAddr: number): Uint8Array {
  const body = new Uint8Array(276 - 36);
  const dv = new DataView(body.buffer);
  const at = (off: number): number => off - 36; // spec offsets count from the table start
  dv.setUint32(at(40), dsdtAddr, true); // DSDT (32-bit)
  body[at(45)] = 0; // Preferred_PM_Profile: unspecified
  dv.setUint16(
    at(109),
    IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED,
    true,
  );
  dv.setUint32(at(112), FADT_F_HW_REDUCED_ACPI | FADT_F_RESET_REG_SUP, true);
  // RESET_REG: the i8042 command port, value 0xfe pulses the CPU reset line (as on real PCs).
  gas(dv, at(116), 1 /* System I/O */, 8, 1 /* byte access */, I8042_PORT + 4);
  body[at(128)] = 0xfe; // RESET_VALUE
  body[at(131)] = 4; // FADT Minor Version: ACPI 6.4
  dv.setBigUint64(at(140), BigInt(dsdtAddr), true); // X_DSDT
  ascii(body, at(268), "VESSELVM", 8); // Hypervisor Vendor Identity
  return sdt("FACP", 6, body);
}

/** MADT interrupt controller structure types (5.2.12, Table 5.21). */
const MADT_LOCAL_APIC = 0;
const MADT_IO_APIC = 1;
const MADT_INT_SRC_OVERRIDE = 2;
const MADT_LOCAL_APIC_NMI = 4;

/** MADT (5.2.12): one enabled local APIC per CPU (ids 0..n-1), the IOAPIC, IRQ0->GSI2, NMI on LINT1. */
export function buildMadt(cpus: number, ioapicId: number): Uint8Array {
  const { bytes, u8, u16, u32 } = leBytes();
  u32(APIC_START); // Local Interrupt Controller Address
  u32(1); // Flags: PCAT_COMPAT (a dual 8259 is present; ignored by Linux in hardware-reduced mode)
  for (let cpu = 0; cpu < cpus; cpu++) {
    u8(MADT_LOCAL_APIC);
    u8(8);
    u8(cpu); // ACPI Processor UID
    u8(cpu); // APIC ID
    u32(1); // Flags: Enabled
  }
  u8(MADT_IO_APIC);
  u8(12);
  u8(ioapicId);
  u8(0);
  u32(IOAPIC_START);
  u32(0); // Global System Interrupt Base
  // ISA IRQ 0 (PIT) is wired to IOAPIC input 2, as on PCs, QEMU and Firecracker.
  u8(MADT_INT_SRC_OVERRIDE);
  u8(10);
  u8(0); // Bus: ISA
  u8(0); // Source: IRQ 0
  u32(2); // GSI 2
  u16(0); // Flags: conforms to the bus (edge, active high)
  // NMI to LINT1 of every processor (UID 0xff), edge, active high.
  u8(MADT_LOCAL_APIC_NMI);
  u8(6);
  u8(0xff);
  u16(0x0005);
  u8(1);
  return sdt("APIC", 5, Uint8Array.from(bytes));
}

/**
 * The legacy ISA devices every Vessel machine has, as ACPI devices. In hardware-reduced mode
 * Linux sets up no ISA IRQs by itself (arch/x86/kernel/acpi/boot.c: nr_legacy_irqs() is 0 without
 * a legacy PIC), so a driver gets a working interrupt only from an ACPI _CRS (as Firecracker's
 * DSDT does for its serial port and i8042): COM1 (PNP0501) for 8250_pnp, the PS/2 keyboard
 * controller (PNP0303) for i8042, the CMOS RTC (PNP0B00) for rtc_cmos. Edge-triggered, active high.
 */
function legacyDevices(): Uint8Array[] {
  const edge = { edge: true, activeLow: false, shared: false };
  const dev = (name: string, hid: string, resources: Uint8Array[]): Uint8Array =>
    aml.device(name, [
      aml.name("_HID", aml.eisaId(hid)),
      aml.name("_UID", aml.integer(0)),
      aml.name("_CRS", aml.resourceTemplate(resources)),
    ]);
  return [
    dev("COM1", "PNP0501", [aml.io(COM1_PORT, 8), aml.extendedInterrupt(COM1_IRQ, edge)]),
    dev("PS2K", "PNP0303", [
      aml.io(I8042_PORT, 1),
      aml.io(I8042_PORT + 4, 1),
      aml.extendedInterrupt(I8042_KBD_IRQ, edge),
    ]),
    dev("RTC", "PNP0B00", [aml.io(RTC_PORT, 2), aml.extendedInterrupt(RTC_IRQ, edge)]),
  ];
}

/**
 * DSDT: the legacy devices (COM1, PS/2 controller, RTC), then `\_SB.Vnnn` devices with _HID
 * "LNRO0005", _UID n and _CRS {Memory32Fixed window, Interrupt GSI} for each virtio-mmio device.
 */
export function buildDsdt(devices: readonly VirtioMmioSlot[]): Uint8Array {
  const devs = devices.map((d, i) =>
    aml.device(`V${i.toString().padStart(3, "0")}`, [
      aml.name("_HID", aml.string("LNRO0005")),
      aml.name("_UID", aml.integer(i)),
      aml.name(
        "_CRS",
        aml.resourceTemplate([
          aml.memory32Fixed(d.base, d.size),
          aml.extendedInterrupt(d.irq, { edge: d.edge ?? false, activeLow: false, shared: false }),
        ]),
      ),
    ]),
  );
  return sdt("DSDT", 2, aml.scope("\\_SB_", [...legacyDevices(), ...devs]));
}

function pointerTable(
  signature: string,
  revision: number,
  addrs: readonly number[],
  width: 4 | 8,
): Uint8Array {
  const body = new Uint8Array(addrs.length * width);
  const dv = new DataView(body.buffer);
  addrs.forEach((a, i) => {
    if (width === 8) dv.setBigUint64(i * 8, BigInt(a), true);
    else dv.setUint32(i * 4, a, true);
  });
  return sdt(signature, revision, body);
}

/** RSDP revision 2 (5.2.5.3), 36 bytes: checksum over the first 20, extended checksum over all. */
export function buildRsdp(rsdtAddr: number, xsdtAddr: number): Uint8Array {
  const r = new Uint8Array(36);
  const dv = new DataView(r.buffer);
  ascii(r, 0, "RSD PTR ", 8);
  ascii(r, 9, OEM_ID, 6);
  r[15] = 2; // Revision: ACPI 2.0+
  dv.setUint32(16, rsdtAddr, true);
  dv.setUint32(20, 36, true); // Length
  dv.setBigUint64(24, BigInt(xsdtAddr), true);
  r[8] = acpiChecksum(r.subarray(0, 20));
  r[32] = acpiChecksum(r);
  return r;
}

/** Writes the tables into guest memory (RSDP at RSDP_START, tables from ACPI_TABLES_START). */
export function writeAcpiTables(memory: GuestMemory, config: AcpiConfig): AcpiResult {
  const ioapicId = config.ioapicId ?? config.cpus;
  const tables: Record<string, { addr: number; length: number }> = {};
  let next = ACPI_TABLES_START;
  const place = (sig: string, t: Uint8Array): number => {
    const addr = next;
    if (addr + t.length > ACPI_TABLES_END) {
      throw new BootError(
        "BOOT_ACPI_TOO_BIG",
        `ACPI tables do not fit below 0x${ACPI_TABLES_END.toString(16)}`,
        {
          sig,
        },
      );
    }
    memory.write(addr, t);
    tables[sig] = { addr, length: t.length };
    next = (addr + t.length + 15) & ~15;
    return addr;
  };
  const dsdt = place("DSDT", buildDsdt(config.virtioDevices));
  const fadt = place("FACP", buildFadt(dsdt));
  const madt = place("APIC", buildMadt(config.cpus, ioapicId));
  const xsdt = place("XSDT", pointerTable("XSDT", 1, [fadt, madt], 8));
  const rsdt = place("RSDT", pointerTable("RSDT", 1, [fadt, madt], 4));
  memory.write(RSDP_START, buildRsdp(rsdt, xsdt));
  tables["RSD PTR"] = { addr: RSDP_START, length: 36 };
  return { rsdpAddr: RSDP_START, tables };
}
