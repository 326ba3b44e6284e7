/**
 * Guest-physical layout of a Vessel machine: every fixed address, one documented constant each
 * (Firecracker's arch/x86_64/layout.rs). Both engines and `boot/` use these; nothing else
 * invents an address.
 */

/** GDT used for the direct 32/64-bit entry into a Linux kernel (no firmware runs). */
export const BOOT_GDT_START = 0x500;
/** Empty IDT loaded at entry: the kernel installs its own before enabling interrupts. */
export const BOOT_IDT_START = 0x520;
/** boot_params ("zero page"), passed to the kernel in RSI (64-bit) or ESI (32-bit). */
export const ZERO_PAGE_START = 0x7000;
/** Initial stack pointer for the boot CPU (grows down, below the zero page). */
export const BOOT_STACK_POINTER = 0x8ff0;
/** Identity-mapping page tables for 64-bit entry: PML4, PDPT, and PD covering the first 1 GiB. */
export const PML4_START = 0x9000;
export const PDPTE_START = 0xa000;
export const PDE_START = 0xb000;
/** Kernel command line, NUL-terminated. */
export const CMDLINE_START = 0x20000;
export const CMDLINE_MAX_SIZE = 0x10000;
/** MP floating pointer and table, inside the EBDA where the kernel's MP scan looks. */
export const MPTABLE_START = 0x9fc00;
/** Start of the EBDA: e820 marks 0x9fc00-0x100000 reserved (legacy BIOS area). */
export const EBDA_START = 0x9fc00;
/** ACPI tables: the RSDP must lie in 0xe0000-0xfffff where the kernel scans for it. */
export const RSDP_START = 0xe0000;
export const ACPI_TABLES_START = 0xe0100;
export const ACPI_TABLES_END = 0x100000;
/** Where a bzImage's protected-mode kernel is loaded (boot protocol: code32_start default). */
export const HIMEM_START = 0x100000;

/** The 32-bit MMIO hole below 4 GiB: RAM stops here and resumes at 4 GiB. */
export const MMIO_HOLE_START = 0xc000_0000;
export const MMIO_HOLE_END = 0x1_0000_0000;
/** virtio-mmio windows: one 4 KiB window per device from here, announced in the ACPI DSDT. */
export const VIRTIO_MMIO_START = 0xd000_0000;
export const VIRTIO_MMIO_SIZE = 0x1000;
/**
 * First GSI given to virtio-mmio devices (one each, counting up): IOAPIC pins 16-23, which no ISA
 * device uses (5-12 would collide with the RTC on IRQ 8 and the i8042 AUX port on IRQ 12). The
 * guest learns them from the DSDT (src/boot/acpi.ts), so they need the IOAPIC, as virtio does.
 */
export const VIRTIO_IRQ_BASE = 16;
/** Maximum number of virtio-mmio devices (window and IRQ budget). */
export const VIRTIO_MAX_DEVICES = 8;
/** IOAPIC and local APIC, at their architectural default addresses. */
export const IOAPIC_START = 0xfec0_0000;
export const APIC_START = 0xfee0_0000;
/** KVM_SET_IDENTITY_MAP_ADDR and KVM_SET_TSS_ADDR (3 pages), just below the BIOS ROM area. */
export const KVM_IDENTITY_MAP_START = 0xfffb_c000;
export const KVM_TSS_START = 0xfffb_d000;

/** Legacy I/O ports. */
export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;
export const I8042_PORT = 0x60; // data; status/command at 0x64
/** i8042 interrupt lines: keyboard output buffer full (IRQ1), AUX/mouse output buffer full (IRQ12). */
export const I8042_KBD_IRQ = 1;
export const I8042_AUX_IRQ = 12;
/** 8259A PIC pair (command/data pairs) and the ELCR (edge/level control, 0x4d0 master, 0x4d1 slave). */
export const PIC_MASTER_PORT = 0x20;
export const PIC_SLAVE_PORT = 0xa0;
export const ELCR_PORT = 0x4d0;
/** 8254 PIT: counters 0-2 at +0..+2, control word at +3; counter 0 drives IRQ0. */
export const PIT_PORT = 0x40;
export const PIT_IRQ = 0;
/** System control port B: PIT gate 2 / speaker enable (write b0-b1), OUT2 (read b5), refresh toggle (b4). */
export const SYSTEM_CONTROL_PORT_B = 0x61;
export const RTC_PORT = 0x70; // index; data at 0x71
export const RTC_IRQ = 8;
/**
 * Vessel's debug-exit port (a Vessel device, like QEMU's isa-debug-exit at 0xf4):
 *   write to DEBUG_EXIT_PORT+0: "guest userspace started" marker (boot-to-userspace time);
 *   write to DEBUG_EXIT_PORT+1: the guest command's exit status (0-255); the VM stops with it.
 */
export const DEBUG_EXIT_PORT = 0xf4;
