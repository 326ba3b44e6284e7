import type { VirtioDeviceSpec } from "../devices/virtio/device_spec.js";
import {
  DEFAULT_SOFT_TECHNIQUE,
  isSoftTechnique,
  SOFT_TECHNIQUES,
  type SoftTechnique,
} from "../engines/soft/technique.js";
import { UsageError } from "../errors.js";

export type EngineName = "kvm" | "soft";

/** A machine, as `vessel vm run` and the API describe it (everything resolved: paths, sizes). */
export interface VmConfig {
  engine: EngineName;
  /** Path of a Linux bzImage. */
  kernel: string;
  initrd?: string;
  cmdline: string;
  memBytes: number;
  cpus: number;
  /** /dev/kvm, or another path (tests inject a missing one). */
  kvmPath?: string;
  /** Stop the VM after this long (ms); undefined: no limit. */
  timeoutMs?: number;
  /**
   * virtio-mmio devices, in slot order (devices/virtio/factory.ts; announced to the guest in the
   * ACPI DSDT). Must be structured-cloneable: no `onOutput` callbacks.
   */
  virtio?: VirtioDeviceSpec[];
  /**
   * Soft engine: decompress the bzImage's payload in the VMM and enter vmlinux directly (default
   * true; boot/linux_loader.ts `decompress`), skipping ~2 G guest instructions of the kernel's own
   * decompressor. false (`--no-decompress`) boots the bzImage as it is. The KVM engine ignores it.
   */
  decompress?: boolean;
  /**
   * Soft engine: how guest code runs, the interpreter or the binary translator
   * (engines/soft/technique.ts; default DEFAULT_SOFT_TECHNIQUE). The KVM engine refuses it.
   */
  technique?: SoftTechnique;
}

const MiB = 1024 * 1024;
/** Below this no Linux kernel of ours starts (the loader checks kernel + initrd precisely). */
export const MIN_MEM_BYTES = 32 * MiB;
/** Above this the 32-bit MMIO hole layout and our page tables are not meant to stretch. */
export const MAX_MEM_BYTES = 64 * 1024 * MiB;

/**
 * Parses a memory size: "512M", "1G", "2048" (MiB without a suffix), "256MiB". Throws UsageError
 * with the accepted forms on anything else.
 */
export function parseMemSize(text: string): number {
  const m = /^(\d+)\s*(k|kib|m|mib|g|gib)?$/i.exec(text.trim());
  if (m === null) {
    throw new UsageError("VM_BAD_MEM", `--mem "${text}" is not a size: use e.g. 512M, 1G or 2048 (MiB)`, {
      mem: text,
    });
  }
  const n = Number(m[1]);
  const unit = (m[2] ?? "m").toLowerCase()[0];
  const bytes = unit === "k" ? n * 1024 : unit === "g" ? n * 1024 * MiB : n * MiB;
  if (bytes < MIN_MEM_BYTES) {
    throw new UsageError(
      "VM_MEM_TOO_SMALL",
      `--mem ${text} is too small: a Linux guest needs at least ${MIN_MEM_BYTES / MiB} MiB (try --mem 256M)`,
      { mem: text },
    );
  }
  if (bytes > MAX_MEM_BYTES) {
    throw new UsageError(
      "VM_MEM_TOO_LARGE",
      `--mem ${text} is more than Vessel supports (${MAX_MEM_BYTES / MiB / 1024} GiB)`,
      {
        mem: text,
      },
    );
  }
  if (bytes % 4096 !== 0)
    throw new UsageError("VM_BAD_MEM", `--mem ${text} is not a whole number of 4 KiB pages`);
  return bytes;
}

export function parseCpus(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(n) || n < 1 || n > 255) {
    throw new UsageError("VM_BAD_CPUS", `--cpus "${text}" must be a whole number from 1 to 255`, {
      cpus: text,
    });
  }
  return n;
}

export function parseEngine(text: string): EngineName {
  if (text === "kvm" || text === "soft") return text;
  throw new UsageError("VM_BAD_ENGINE", `--engine "${text}" is not an engine: use kvm or soft`, {
    engine: text,
  });
}

/** `--technique`: a soft-engine technique; anything else is a UsageError naming the valid ones. */
export function parseTechnique(text: string): SoftTechnique {
  if (isSoftTechnique(text)) return text;
  throw new UsageError(
    "VM_BAD_TECHNIQUE",
    `--technique "${text}" is not a soft-engine technique: use ${SOFT_TECHNIQUES.join(" or ")} (default ${DEFAULT_SOFT_TECHNIQUE})`,
    { technique: text },
  );
}
