/**
 * The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), as Linux 6.1's
 * drivers/virtio/virtio_mmio.c drives it: the register window of one device on the MMIO bus,
 * feature negotiation, queue configuration, device status and reset, the interrupt status register
 * and a level-triggered interrupt line (raised while InterruptStatus != 0: the driver's handler
 * reads InterruptStatus, writes it back to InterruptACK, and the line drops).
 *
 * Where the spec and the driver differ the driver decides: the driver reads the 64-bit config
 * fields as two 32-bit reads (vm_get), reads QueueReady back after clearing it (vm_del_vq's
 * WARN_ON), and asks SHMLen of region ids that do not exist (answered ~0, "no region").
 */
import type { AccessSize, Device, IrqLine } from "../../bus/device.js";
import type { GuestMemory } from "../../memory/guest_memory.js";
import { GuestFaultLog, hex } from "../guest_fault_log.js";
import { type QueueConfig, Virtqueue } from "./queue.js";
import {
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  type VirtioDevice,
  VirtioError,
  type VirtioInterrupt,
} from "./virtio_device.js";

/** Register offsets (include/uapi/linux/virtio_mmio.h). */
export const enum MmioReg {
  MagicValue = 0x000,
  Version = 0x004,
  DeviceId = 0x008,
  VendorId = 0x00c,
  DeviceFeatures = 0x010,
  DeviceFeaturesSel = 0x014,
  DriverFeatures = 0x020,
  DriverFeaturesSel = 0x024,
  QueueSel = 0x030,
  QueueNumMax = 0x034,
  QueueNum = 0x038,
  QueueReady = 0x044,
  QueueNotify = 0x050,
  InterruptStatus = 0x060,
  InterruptAck = 0x064,
  Status = 0x070,
  QueueDescLow = 0x080,
  QueueDescHigh = 0x084,
  QueueDriverLow = 0x090,
  QueueDriverHigh = 0x094,
  QueueDeviceLow = 0x0a0,
  QueueDeviceHigh = 0x0a4,
  ShmSel = 0x0ac,
  ShmLenLow = 0x0b0,
  ShmLenHigh = 0x0b4,
  ShmBaseLow = 0x0b8,
  ShmBaseHigh = 0x0bc,
  ConfigGeneration = 0x0fc,
  Config = 0x100,
}

/** "virt" little-endian. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
export const VIRTIO_MMIO_VERSION = 2;
/** Vendor id: "VSSL" (QEMU answers "QEMU"; Linux matches drivers on device id only). */
export const VESSEL_VENDOR_ID = 0x4c535356;
/** InterruptStatus bits (virtio 1.2 §4.2.2). */
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

/** Features the transport's queues implement for every device. */
const TRANSPORT_FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

export interface MmioTransportOptions {
  /** Bound on the bytes of one descriptor chain (see queue.ts). */
  maxChainBytes?: number;
  /**
   * "level" (default): the line is high while InterruptStatus != 0 (DSDT: level, active high).
   * "edge": every notification is a pulse (setLevel(true) then false), for an edge-triggered
   * line (DSDT edge; a KVM irqfd without resampling).
   */
  irqMode?: "level" | "edge";
}

/** Counters of one transport, for statistics. */
export interface MmioTransportStats {
  notifies: number;
  interrupts: number;
  resets: number;
  guestErrors: number;
}

interface QueueRegs extends QueueConfig {
  maxSize: number;
}

/**
 * One virtio-mmio window: a bus Device whose registers drive a VirtioDevice. Registered on the
 * MmioBus at VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE with line VIRTIO_IRQ_BASE + i.
 */
export class MmioTransport implements Device, VirtioInterrupt {
  readonly name: string;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private status = 0;
  private interruptStatus = 0;
  private configGeneration = 0;
  private readonly regs: QueueRegs[];
  /** Queues handed to the device at DRIVER_OK (empty before). */
  private queues: Virtqueue[] = [];
  private activated = false;
  private lineHigh = false;
  readonly faults: GuestFaultLog;
  readonly stats: MmioTransportStats = { notifies: 0, interrupts: 0, resets: 0, guestErrors: 0 };

  constructor(
    readonly device: VirtioDevice,
    private readonly memory: GuestMemory,
    private readonly irq: IrqLine,
    private readonly options: MmioTransportOptions = {},
  ) {
    this.name = `virtio-mmio(${device.name})`;
    this.faults = new GuestFaultLog(this.name);
    this.regs = device.queueMaxSizes.map((maxSize) => ({
      maxSize,
      size: maxSize,
      ready: false,
      descTable: 0,
      availRing: 0,
      usedRing: 0,
    }));
  }

  /** All features offered: the device's and the transport's. */
  get offeredFeatures(): bigint {
    return this.device.features | TRANSPORT_FEATURES;
  }

  /** The features the driver accepted (meaningful once FEATURES_OK is set). */
  get acceptedFeatures(): bigint {
    return this.driverFeatures;
  }

  /** Device status register (virtio 1.2 §2.1). */
  get deviceStatus(): number {
    return this.status;
  }

  read(offset: number, size: AccessSize): number {
    if (offset >= MmioReg.Config) return this.device.readConfig(offset - MmioReg.Config, size);
    if (size !== 4 || (offset & 3) !== 0) {
      // §4.2.2.2: the driver MUST use 32-bit accesses for the control registers.
      this.guestError(`${size}-byte read of register ${hex(offset)}`);
      return 0;
    }
    const q = this.regs[this.queueSel];
    switch (offset) {
      case MmioReg.MagicValue:
        return VIRTIO_MMIO_MAGIC;
      case MmioReg.Version:
        return VIRTIO_MMIO_VERSION;
      case MmioReg.DeviceId:
        return this.device.deviceId;
      case MmioReg.VendorId:
        return VESSEL_VENDOR_ID;
      case MmioReg.DeviceFeatures:
        return this.deviceFeaturesSel > 1
          ? 0
          : Number((this.offeredFeatures >> BigInt(32 * this.deviceFeaturesSel)) & 0xffffffffn);
      case MmioReg.QueueNumMax:
        return q?.maxSize ?? 0;
      case MmioReg.QueueReady:
        return q?.ready === true ? 1 : 0;
      case MmioReg.InterruptStatus:
        return this.interruptStatus;
      case MmioReg.Status:
        return this.status;
      case MmioReg.ShmLenLow:
      case MmioReg.ShmLenHigh:
        return 0xffffffff; // no shared memory regions: length ~0 (vm_get_shm_region)
      case MmioReg.ShmBaseLow:
      case MmioReg.ShmBaseHigh:
        return 0xffffffff;
      case MmioReg.ConfigGeneration:
        return this.configGeneration;
      default:
        // Write-only registers and holes read as 0 (§4.2.2: reading a write-only register is undefined).
        return 0;
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset >= MmioReg.Config) {
      this.device.writeConfig(offset - MmioReg.Config, size, value);
      return;
    }
    if (size !== 4 || (offset & 3) !== 0) {
      this.guestError(`${size}-byte write of register ${hex(offset)}`);
      return;
    }
    value >>>= 0;
    switch (offset) {
      case MmioReg.DeviceFeaturesSel:
        this.deviceFeaturesSel = value;
        return;
      case MmioReg.DriverFeaturesSel:
        this.driverFeaturesSel = value;
        return;
      case MmioReg.DriverFeatures:
        this.writeDriverFeatures(value);
        return;
      case MmioReg.QueueSel:
        this.queueSel = value;
        return;
      case MmioReg.QueueNum:
      case MmioReg.QueueDescLow:
      case MmioReg.QueueDescHigh:
      case MmioReg.QueueDriverLow:
      case MmioReg.QueueDriverHigh:
      case MmioReg.QueueDeviceLow:
      case MmioReg.QueueDeviceHigh:
        this.writeQueueConfig(offset, value);
        return;
      case MmioReg.QueueReady:
        this.writeQueueReady(value);
        return;
      case MmioReg.QueueNotify:
        this.notifyQueue(value);
        return;
      case MmioReg.InterruptAck:
        this.interruptStatus &= ~value;
        this.updateLine();
        return;
      case MmioReg.Status:
        this.writeStatus(value);
        return;
      case MmioReg.ShmSel:
        // SHMSel: no regions exist, every id reads back as absent.
        return;
      default:
        this.guestError(`write of ${hex(value)} to read-only or reserved register ${hex(offset)}`);
    }
  }

  private writeDriverFeatures(value: number): void {
    // §3.1.1: features are written after DRIVER and before FEATURES_OK.
    if ((this.status & STATUS_FEATURES_OK) !== 0 || (this.status & STATUS_DRIVER) === 0) {
      this.guestError("DriverFeatures written outside feature negotiation");
      return;
    }
    if (this.driverFeaturesSel > 1) return;
    const shift = BigInt(32 * this.driverFeaturesSel);
    this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(value) << shift);
  }

  private writeQueueConfig(offset: number, value: number): void {
    const q = this.regs[this.queueSel];
    if (q === undefined) {
      this.guestError(
        `queue register ${hex(offset)} written for queue ${this.queueSel}, which does not exist`,
      );
      return;
    }
    if (q.ready) {
      // §4.2.2.3: the driver must not change a queue while QueueReady is set.
      this.guestError(`queue ${this.queueSel} configuration changed while ready`);
      return;
    }
    const low = (old: number) => Math.floor(old / 2 ** 32) * 2 ** 32 + value;
    const high = (old: number) => value * 2 ** 32 + (old % 2 ** 32);
    switch (offset) {
      case MmioReg.QueueNum:
        q.size = value;
        return;
      case MmioReg.QueueDescLow:
        q.descTable = low(q.descTable);
        return;
      case MmioReg.QueueDescHigh:
        q.descTable = high(q.descTable);
        return;
      case MmioReg.QueueDriverLow:
        q.availRing = low(q.availRing);
        return;
      case MmioReg.QueueDriverHigh:
        q.availRing = high(q.availRing);
        return;
      case MmioReg.QueueDeviceLow:
        q.usedRing = low(q.usedRing);
        return;
      case MmioReg.QueueDeviceHigh:
        q.usedRing = high(q.usedRing);
        return;
    }
  }

  private writeQueueReady(value: number): void {
    const q = this.regs[this.queueSel];
    if (q === undefined) {
      this.guestError(`QueueReady written for queue ${this.queueSel}, which does not exist`);
      return;
    }
    if (value === 1 && q.size > q.maxSize) {
      this.guestError(`queue ${this.queueSel} size ${q.size} exceeds QueueNumMax ${q.maxSize}`);
    }
    q.ready = value === 1;
  }

  private writeStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    const old = this.status;
    if ((value & ~old & STATUS_FEATURES_OK) !== 0) {
      // §2.2.2: accept FEATURES_OK only for a subset of what we offer, VERSION_1 included; if not
      // the bit stays clear and the driver, reading Status back, gives up (virtio_features_ok).
      const unknown = this.driverFeatures & ~this.offeredFeatures;
      if (unknown !== 0n || (this.driverFeatures & VIRTIO_F_VERSION_1) === 0n) {
        this.guestError(
          unknown !== 0n
            ? `driver accepted features 0x${unknown.toString(16)} that were not offered`
            : "driver did not accept VIRTIO_F_VERSION_1",
        );
        value &= ~STATUS_FEATURES_OK;
      }
    }
    // The driver only ever adds bits; NEEDS_RESET is ours and survives its writes.
    this.status = (value & 0xff) | (old & STATUS_DEVICE_NEEDS_RESET);
    if ((value & ~old & STATUS_DRIVER_OK) !== 0 && !this.activated) this.activate();
  }

  private activate(): void {
    if ((this.status & STATUS_FEATURES_OK) === 0) {
      this.guestError("DRIVER_OK without FEATURES_OK");
      this.needsReset(
        new VirtioError("VIRTIO_NO_FEATURES_OK", "DRIVER_OK set before features were accepted"),
      );
      return;
    }
    const features = this.driverFeatures;
    const onBroken = (err: VirtioError) => this.needsReset(err);
    const maxChainBytes = this.options.maxChainBytes ?? this.device.maxChainBytes;
    this.queues = this.regs.map(
      (r, index) =>
        new Virtqueue(
          this.memory,
          index,
          {
            size: r.size,
            ready: r.ready && r.size <= r.maxSize,
            descTable: r.descTable,
            availRing: r.availRing,
            usedRing: r.usedRing,
          },
          {
            indirect: (features & VIRTIO_RING_F_INDIRECT_DESC) !== 0n,
            eventIdx: (features & VIRTIO_RING_F_EVENT_IDX) !== 0n,
            onBroken,
            ...(maxChainBytes === undefined ? {} : { maxChainBytes }),
          },
        ),
    );
    this.activated = true;
    if ((this.status & STATUS_DEVICE_NEEDS_RESET) !== 0) return;
    try {
      this.device.activate({ queues: this.queues, features, interrupt: this });
    } catch (err) {
      this.needsReset(
        err instanceof VirtioError
          ? err
          : new VirtioError("VIRTIO_ACTIVATE", `${this.device.name} failed to start`, {}, err),
      );
    }
  }

  /**
   * A queue notification: what a write of `index` to QueueNotify does. Public for the KVM engine's
   * ioeventfd path (KVM_IOEVENTFD on window + 0x50 with datamatch = index), which signals the
   * machine worker without an MMIO exit; it calls this when the eventfd fires.
   */
  notifyQueue(index: number): void {
    this.stats.notifies++;
    if (!this.activated || (this.status & STATUS_DEVICE_NEEDS_RESET) !== 0) {
      if (!this.activated) this.guestError(`QueueNotify(${index}) before DRIVER_OK`);
      return;
    }
    const q = this.queues[index];
    if (q === undefined || !q.ready) {
      this.guestError(`QueueNotify(${index}) for a queue that does not exist or is not ready`);
      return;
    }
    this.guarded(() => this.device.queueNotify(index));
  }

  /**
   * Runs device code so that nothing it throws reaches the vCPU's MMIO exit: a device bug or an
   * unexpected host failure marks this device DEVICE_NEEDS_RESET and the machine goes on.
   */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.needsReset(
        err instanceof VirtioError
          ? err
          : new VirtioError(
              "VIRTIO_DEVICE_FAILED",
              `${this.device.name} failed: ${(err as Error).message}`,
              {},
              err,
            ),
      );
    }
  }

  /** Status 0 (virtio 1.2 §4.2.3.1): back to the power-on state, queues and interrupt cleared. */
  reset(): void {
    if (this.activated) this.device.reset();
    this.stats.resets++;
    this.activated = false;
    this.queues = [];
    this.status = 0;
    this.driverFeatures = 0n;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    for (const r of this.regs) {
      r.size = r.maxSize;
      r.ready = false;
      r.descTable = r.availRing = r.usedRing = 0;
    }
    this.interruptStatus = 0;
    this.updateLine();
  }

  /**
   * The device cannot go on (a malformed queue, a failed backend): set DEVICE_NEEDS_RESET and
   * send a configuration change notification (virtio 1.2 §2.1.2). The guest's only way out is a reset.
   */
  needsReset(err: VirtioError): void {
    if ((this.status & STATUS_DEVICE_NEEDS_RESET) !== 0) return;
    this.faults.report(`${err.message}; device needs reset`);
    this.stats.guestErrors++;
    this.status |= STATUS_DEVICE_NEEDS_RESET;
    this.signalConfigChange();
  }

  /** The device changed its configuration space: bump ConfigGeneration and notify the driver. */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    this.signalConfigChange();
  }

  signalUsedBuffer(): void {
    this.interruptStatus |= VIRTIO_MMIO_INT_VRING;
    this.notifyLine();
  }

  signalConfigChange(): void {
    this.interruptStatus |= VIRTIO_MMIO_INT_CONFIG;
    this.notifyLine();
  }

  /** A new notification: level lines follow InterruptStatus, edge lines pulse every time. */
  private notifyLine(): void {
    if (this.options.irqMode !== "edge") {
      this.updateLine();
      return;
    }
    this.stats.interrupts++;
    this.irq.setLevel(true);
    this.irq.setLevel(false);
  }

  private updateLine(): void {
    if (this.options.irqMode === "edge") return;
    const high = this.interruptStatus !== 0;
    if (high === this.lineHigh) return;
    this.lineHigh = high;
    if (high) this.stats.interrupts++;
    this.irq.setLevel(high);
  }

  private guestError(message: string): void {
    this.stats.guestErrors++;
    this.faults.report(message);
  }

  /** Services the device's host-side I/O (see VirtioDevice.poll); cheap when there is none. */
  poll(force = false): void {
    if (this.activated && (this.status & STATUS_DEVICE_NEEDS_RESET) === 0)
      this.guarded(() => this.device.poll?.(force));
  }

  /** Host descriptors whose readiness means `poll()` has work (see VirtioDevice.waitFds). */
  waitFds(): { fd: number; events: number }[] {
    return this.activated ? (this.device.waitFds?.() ?? []) : [];
  }

  /** Closes the device's host resources. */
  close(): void {
    this.device.close?.();
  }
}
