/**
 * The seam between the virtio-mmio transport and a virtio device model (Firecracker's
 * `VirtioDevice` trait): what a device offers (type, queues, features, config space), what it is
 * given when the driver sets DRIVER_OK (its queues and an interrupt), and its reset.
 *
 * Bit numbers and ids are from the virtio 1.2 specification (§5 device types, §6 reserved feature
 * bits) as Linux 6.1 names them in include/uapi/linux/virtio_{ids,config,ring}.h.
 */
import { VesselError } from "../../errors.js";
import type { Virtqueue } from "./queue.js";

/** Errors of the virtio family: a malformed virtqueue, a device that cannot start, a host backend. */
export class VirtioError extends VesselError {}

/** Device ids (virtio 1.2 §5, include/uapi/linux/virtio_ids.h). */
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_VSOCK = 19;

/** Reserved feature bits (virtio 1.2 §6), as bigint masks over the 64-bit feature space. */
export const VIRTIO_RING_F_INDIRECT_DESC = 1n << 28n;
export const VIRTIO_RING_F_EVENT_IDX = 1n << 29n;
export const VIRTIO_F_VERSION_1 = 1n << 32n;

/** Device status bits (virtio 1.2 §2.1). */
export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_DEVICE_NEEDS_RESET = 0x40;
export const STATUS_FAILED = 0x80;

/** How a device tells the driver that it used buffers or changed its configuration. */
export interface VirtioInterrupt {
  /** Sets InterruptStatus bit 0 (used buffer notification) and raises the line. */
  signalUsedBuffer(): void;
  /** Sets InterruptStatus bit 1 (configuration change notification) and raises the line. */
  signalConfigChange(): void;
}

/** What a device receives when the driver sets DRIVER_OK. */
export interface ActivateContext {
  /** One per queue the device declared, configured by the driver (some may be not ready). */
  queues: readonly Virtqueue[];
  /** The features the driver accepted (a subset of the device's, VERSION_1 included). */
  features: bigint;
  interrupt: VirtioInterrupt;
}

export interface VirtioDevice {
  /** Virtio device id (VIRTIO_ID_*). */
  readonly deviceId: number;
  /** Short name for logs and statistics ("virtio-blk"). */
  readonly name: string;
  /** Maximum size of each queue (powers of two); the number of entries is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /**
   * Device-specific feature bits. The transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX,
   * which its queues implement for every device.
   */
  readonly features: bigint;
  /** Counters for statistics (requests, bytes, errors), Firecracker's per-device metrics. */
  readonly metrics: Readonly<Record<string, number>>;
  /** Bound on the bytes of one descriptor chain of this device (default: queue.ts's). */
  readonly maxChainBytes?: number;
  /** Little-endian device configuration space (virtio 1.2 §4.2.2 "Config"), read at 0x100+. */
  readConfig(offset: number, size: 1 | 2 | 4): number;
  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void;
  /**
   * The driver set DRIVER_OK. Throws a VirtioError if the device cannot run (the transport then
   * sets DEVICE_NEEDS_RESET); otherwise the device starts serving its queues.
   */
  activate(ctx: ActivateContext): void;
  /** The driver wrote `queueIndex` to QueueNotify ("kick"), after activation. */
  queueNotify(queueIndex: number): void;
  /** The driver wrote 0 to Status: drop in-flight state and host connections, back to pre-activation. */
  reset(): void;
  /**
   * Services host-side I/O without blocking (TAP frames, vsock sockets). The machine's run loop
   * calls it regularly (after exits, from the soft CPU's poll hook, when a waiter thread saw one
   * of `waitFds()` ready): the machine worker's event loop does not turn while the guest runs.
   * Devices may skip unforced calls that come too often; `force` says something is known ready.
   */
  poll?(force?: boolean): void;
  /** Host descriptors (and poll(2) events) whose readiness means `poll()` has work to do. */
  waitFds?(): { fd: number; events: number }[];
  /** Closes host resources (files, sockets, TAP) for good: the machine is going away. */
  close?(): void;
}

/** Reads `size` bytes little-endian from a config byte array; bytes past its end read as 0. */
export function readConfigBytes(config: Uint8Array, offset: number, size: 1 | 2 | 4): number {
  let value = 0;
  for (let i = 0; i < size; i++) value |= (config[offset + i] ?? 0) << (8 * i);
  return value >>> 0;
}
