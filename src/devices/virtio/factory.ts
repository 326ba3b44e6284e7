/**
 * Builds virtio-mmio devices from a description, for the machine assembly (vm/): each spec
 * becomes a VirtioDevice behind an MmioTransport, a bus Device for the MMIO window of slot i:
 *
 *   window  VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE, VIRTIO_MMIO_SIZE bytes
 *   line    GSI VIRTIO_IRQ_BASE + i, level-triggered, active high
 *
 * What the machine assembly does with them (in the machine worker, which owns the devices):
 *   1. `const virtio = attachVirtioDevices(specs, { memory, mmio, irqLine: (gsi) => engine.irqLine(gsi) })`
 *      (registers each transport on the MmioBus; KVM: KVM_IRQ_LINE levels; soft engine: IOAPIC
 *      input `gsi`, level-triggered).
 *   2. Tell the guest: `buildDsdt(specs.map((_, i) => virtioMmioSlot(i)))` through boot/acpi (LNRO0005
 *      devices; Debian's kernels have no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), and add
 *      `console=hvc0` to the command line if the virtio console should be the console.
 *   3. Poll host I/O: call `t.poll()` for every transport from the run loop's poll hook (after exits,
 *      from the soft CPU's `poll`); unforced calls are throttled to one look per 0.5 ms. When the
 *      guest idles in HLT inside KVM_RUN, a waiter thread blocked in poll(2) on the union of
 *      `t.waitFds()` kicks the machine thread, which then calls `t.poll(true)`.
 *   4. Console: `(t.device as ConsoleDevice).onOutput = ...` and `.input(bytes)` for keyboard bytes.
 *   5. KVM ioeventfd (optional): KVM_IOEVENTFD on window + 0x50 (QueueNotify, 4 bytes, datamatch =
 *      queue index); when the eventfd fires, `t.notifyQueue(index)`.
 *   6. Statistics: `t.stats` (transport) and `t.device.metrics` (per device). On stop: `t.close()`
 *      (closes images, removes the TAP and the vsock socket file).
 * Requests are processed in the machine worker at the notify, except virtio-blk's, which go to
 * an I/O thread of their own (blk/io_thread.ts); its completions reach the guest through step 3.
 */
import type { IrqLine } from "../../bus/device.js";
import type { MmioBus } from "../../bus/mmio_bus.js";
import {
  VIRTIO_IRQ_BASE,
  VIRTIO_MAX_DEVICES,
  VIRTIO_MMIO_SIZE,
  VIRTIO_MMIO_START,
} from "../../memory/layout.js";
import type { GuestMemory } from "../../memory/guest_memory.js";
import { attachTapToBridge, configureTapAddress, Tap } from "../../sys/tap.js";
import { BlkDevice } from "./blk/device.js";
import type { VirtioDeviceSpec } from "./device_spec.js";
import { ConsoleDevice } from "./console/device.js";
import { NetDevice } from "./net/device.js";
import { RngDevice } from "./rng/device.js";
import { MmioTransport } from "./transport_mmio.js";
import { type VirtioDevice, VirtioError } from "./virtio_device.js";
import { VsockDevice } from "./vsock/device.js";

export type { VirtioDeviceSpec } from "./device_spec.js";

export interface VirtioContext {
  memory: GuestMemory;
  /** The device's interrupt line (GSI VIRTIO_IRQ_BASE + slot). */
  irq: IrqLine;
  /** How the line is driven; must match the DSDT's trigger mode (default "level"). */
  irqMode?: "level" | "edge";
}

/** Builds the device model of a spec (host resources opened: image, TAP, listening socket). */
export function createVirtioModel(spec: VirtioDeviceSpec, memory: GuestMemory): VirtioDevice {
  switch (spec.kind) {
    case "blk":
      return new BlkDevice(memory, {
        path: spec.path,
        ...(spec.readOnly === undefined ? {} : { readOnly: spec.readOnly }),
        ...(spec.serial === undefined ? {} : { serial: spec.serial }),
        ioThread: spec.ioThread ?? true,
      });
    case "net": {
      const tap = Tap.open(spec.tap);
      try {
        if (spec.hostAddress !== undefined) configureTapAddress(tap.name, spec.hostAddress);
        if (spec.bridge !== undefined) attachTapToBridge(tap.name, spec.bridge);
        return new NetDevice(memory, { tap, ...(spec.mac === undefined ? {} : { mac: spec.mac }) });
      } catch (err) {
        tap.close();
        throw err;
      }
    }
    case "rng":
      return new RngDevice(memory);
    case "console":
      return new ConsoleDevice(memory, spec.onOutput === undefined ? {} : { onOutput: spec.onOutput });
    case "vsock":
      return new VsockDevice(memory, { cid: spec.cid, udsPath: spec.udsPath });
  }
}

/** A virtio device behind its virtio-mmio transport: the `Device` to register on the MmioBus. */
export function createVirtioDevice(spec: VirtioDeviceSpec, ctx: VirtioContext): MmioTransport {
  return new MmioTransport(
    createVirtioModel(spec, ctx.memory),
    ctx.memory,
    ctx.irq,
    ctx.irqMode === undefined ? {} : { irqMode: ctx.irqMode },
  );
}

/**
 * Where slot `i` lives: its MMIO window and its GSI, in the shape boot/acpi.ts's buildDsdt takes
 * (VirtioMmioSlot; level-triggered, the default there).
 */
export function virtioMmioSlot(i: number): { base: number; size: number; irq: number } {
  if (!Number.isInteger(i) || i < 0 || i >= VIRTIO_MAX_DEVICES) {
    throw new VirtioError(
      "VIRTIO_SLOT",
      `virtio-mmio slot ${i} does not exist: at most ${VIRTIO_MAX_DEVICES} devices`,
      {
        slot: i,
      },
    );
  }
  return { base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE, size: VIRTIO_MMIO_SIZE, irq: VIRTIO_IRQ_BASE + i };
}

/**
 * The kernel parameter announcing slot `i` without ACPI: `virtio_mmio.device=4K@0xd0000000:5`.
 * Only for kernels built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES; Debian's are not (6.1.0-50-686
 * and -cloud-amd64 configs), so the default guest finds its devices through the ACPI DSDT.
 */
export function virtioMmioCmdlineArg(i: number): string {
  const s = virtioMmioSlot(i);
  return `virtio_mmio.device=${s.size / 1024}K@0x${s.base.toString(16)}:${s.irq}`;
}

/**
 * Creates every device of `specs` in slot order and registers it on the bus. On failure the
 * devices already created are closed (no TAP or socket left behind). Returns the transports, in
 * slot order: the caller closes them (`transport.close()`) when the machine stops.
 */
export function attachVirtioDevices(
  specs: readonly VirtioDeviceSpec[],
  ctx: { memory: GuestMemory; mmio: MmioBus; irqLine: (gsi: number) => IrqLine; irqMode?: "level" | "edge" },
): MmioTransport[] {
  if (specs.length > VIRTIO_MAX_DEVICES) {
    throw new VirtioError(
      "VIRTIO_TOO_MANY",
      `${specs.length} virtio devices asked, at most ${VIRTIO_MAX_DEVICES}`,
      {
        count: specs.length,
      },
    );
  }
  const out: MmioTransport[] = [];
  try {
    specs.forEach((spec, i) => {
      const slot = virtioMmioSlot(i);
      const t = createVirtioDevice(spec, {
        memory: ctx.memory,
        irq: ctx.irqLine(slot.irq),
        ...(ctx.irqMode === undefined ? {} : { irqMode: ctx.irqMode }),
      });
      out.push(t);
      ctx.mmio.register(slot.base, slot.size, t);
    });
  } catch (err) {
    for (const t of out) t.close();
    throw err;
  }
  return out;
}
