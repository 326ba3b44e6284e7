/**
 * The driver side of virtio, for tests (Firecracker's VirtioTestHelper, virtio-queue's mock.rs):
 * guest memory in a SharedArrayBuffer, split virtqueues laid out in it the way Linux's virtio_ring
 * does, and the virtio-mmio register sequence of drivers/virtio/virtio_mmio.c (probe, feature
 * negotiation, vm_setup_vq, DRIVER_OK). Hostile tests write descriptors by hand with `writeDesc`.
 */
import type { IrqLine } from "../../../src/bus/device.js";
import { GuestMemory } from "../../../src/memory/guest_memory.js";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../../src/devices/virtio/queue.js";
import { MmioReg, MmioTransport } from "../../../src/devices/virtio/transport_mmio.js";
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  type VirtioDevice,
} from "../../../src/devices/virtio/virtio_device.js";

export const MEM_SIZE = 4 * 1024 * 1024;
/** Where queue rings go (one 64 KiB area per queue), and where buffers are allocated from. */
const RINGS_BASE = 0x10000;
const RING_AREA = 0x10000;
const BUFFERS_BASE = 0x100000;

/** An IrqLine that remembers its level and counts rising edges. */
export class TestIrq implements IrqLine {
  high = false;
  raises = 0;
  setLevel(high: boolean): void {
    if (high && !this.high) this.raises++;
    this.high = high;
  }
}

export interface BufferSpec {
  /** Device-readable contents. */
  data?: Uint8Array;
  /** Device-writable buffer of this many bytes. */
  writable?: number;
}

export interface UsedElem {
  id: number;
  len: number;
}

/** One queue as the driver sees it. */
export class DriverQueue {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  private nextDesc = 0;
  private availIdx = 0;
  private lastUsed = 0;

  constructor(
    private readonly helper: VirtioTestHelper,
    readonly index: number,
    readonly size: number,
  ) {
    const base = RINGS_BASE + index * RING_AREA;
    this.desc = base;
    this.avail = base + 16 * size;
    this.used = (this.avail + 6 + 2 * size + 3) & ~3;
    if (this.used + 6 + 8 * size > base + RING_AREA) throw new Error("queue too large for the test layout");
  }

  private get mem(): GuestMemory {
    return this.helper.memory;
  }

  /** Writes descriptor `i` of the main table. */
  writeDesc(i: number, addr: number | bigint, len: number, flags: number, next: number): void {
    const at = this.desc + 16 * i;
    this.mem.writeU64(at, BigInt(addr));
    this.mem.writeU32(at + 8, len >>> 0);
    this.mem.writeU16(at + 12, flags);
    this.mem.writeU16(at + 14, next);
  }

  /** Puts `head` in the available ring and publishes it (without a kick). */
  publish(head: number): void {
    this.mem.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.writeU16(this.avail + 2, this.availIdx);
  }

  /** Sets avail.idx directly (hostile tests). */
  setAvailIdx(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.mem.writeU16(this.avail + 2, this.availIdx);
  }

  /**
   * Builds a chain of buffers (readable ones first, then writable) in fresh memory, directly or
   * through one indirect table, and publishes it. Returns the head and the buffers' addresses.
   */
  add(
    buffers: BufferSpec[],
    opts: { indirect?: boolean; kick?: boolean } = {},
  ): { head: number; addrs: number[] } {
    const addrs: number[] = [];
    const descs: [number, number, number][] = buffers.map((b) => {
      const len = b.data?.length ?? b.writable ?? 0;
      const addr = this.helper.alloc(Math.max(len, 1));
      if (b.data !== undefined) this.mem.write(addr, b.data);
      addrs.push(addr);
      return [addr, len, b.writable !== undefined ? VIRTQ_DESC_F_WRITE : 0];
    });
    let head: number;
    if (opts.indirect === true) {
      const table = this.helper.alloc(16 * descs.length);
      descs.forEach(([addr, len, flags], i) => {
        const at = table + 16 * i;
        this.mem.writeU64(at, BigInt(addr));
        this.mem.writeU32(at + 8, len);
        this.mem.writeU16(at + 12, flags | (i + 1 < descs.length ? VIRTQ_DESC_F_NEXT : 0));
        this.mem.writeU16(at + 14, i + 1);
      });
      head = this.take(1)[0]!;
      this.writeDesc(head, table, 16 * descs.length, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      const ids = this.take(descs.length);
      descs.forEach(([addr, len, flags], i) => {
        const last = i + 1 === descs.length;
        this.writeDesc(ids[i]!, addr, len, flags | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : ids[i + 1]!);
      });
      head = ids[0]!;
    }
    this.publish(head);
    if (opts.kick !== false) this.kick();
    return { head, addrs };
  }

  /** Descriptor indexes, round-robin (tests keep fewer than `size` in flight). */
  private take(n: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      out.push(this.nextDesc);
      this.nextDesc = (this.nextDesc + 1) % this.size;
    }
    return out;
  }

  kick(): void {
    this.helper.transport.write(MmioReg.QueueNotify, 4, this.index);
  }

  /**
   * Used elements added since the last call. Like Linux's virtqueue_get_buf followed by
   * virtqueue_enable_cb, it then sets used_event to the next index, asking (with EVENT_IDX) for an
   * interrupt at the next used buffer.
   */
  takeUsed(): UsedElem[] {
    const out: UsedElem[] = [];
    const idx = this.mem.readU16(this.used + 2);
    while (this.lastUsed !== idx) {
      const at = this.used + 4 + 8 * (this.lastUsed % this.size);
      out.push({ id: this.mem.readU32(at), len: this.mem.readU32(at + 4) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    this.setUsedEvent(this.lastUsed);
    return out;
  }

  /** used.idx as the device last wrote it. */
  usedIdx(): number {
    return this.mem.readU16(this.used + 2);
  }

  /** avail_event (EVENT_IDX): the avail index after which the device wants a kick. */
  availEvent(): number {
    return this.mem.readU16(this.used + 4 + 8 * this.size);
  }

  /** used_event (EVENT_IDX): the used index after which the driver wants an interrupt. */
  setUsedEvent(idx: number): void {
    this.mem.writeU16(this.avail + 4 + 2 * this.size, idx);
  }

  setAvailFlags(flags: number): void {
    this.mem.writeU16(this.avail, flags);
  }
}

/** A virtio-mmio device with a driver in front of it. */
export class VirtioTestHelper {
  readonly memory: GuestMemory;
  readonly irq = new TestIrq();
  readonly transport: MmioTransport;
  readonly device: VirtioDevice;
  queues: DriverQueue[] = [];
  private bump = BUFFERS_BASE;

  constructor(
    makeDevice: (memory: GuestMemory) => VirtioDevice,
    options: { maxChainBytes?: number; memory?: GuestMemory } = {},
  ) {
    this.memory = options.memory ?? GuestMemory.shared([{ base: 0, size: MEM_SIZE }]);
    this.device = makeDevice(this.memory);
    this.transport = new MmioTransport(
      this.device,
      this.memory,
      this.irq,
      options.maxChainBytes === undefined ? {} : { maxChainBytes: options.maxChainBytes },
    );
  }

  /** Allocates guest memory for a buffer (16-byte aligned), wrapping around the buffer area. */
  alloc(len: number): number {
    if (this.bump + len > MEM_SIZE) this.bump = BUFFERS_BASE;
    const at = this.bump;
    this.bump = (this.bump + len + 15) & ~15;
    return at;
  }

  reg(offset: number): number {
    return this.transport.read(offset, 4);
  }

  setReg(offset: number, value: number): void {
    this.transport.write(offset, 4, value);
  }

  /** 64-bit device features, as vm_get_features reads them. */
  deviceFeatures(): bigint {
    this.setReg(MmioReg.DeviceFeaturesSel, 1);
    const hi = BigInt(this.reg(MmioReg.DeviceFeatures));
    this.setReg(MmioReg.DeviceFeaturesSel, 0);
    return (hi << 32n) | BigInt(this.reg(MmioReg.DeviceFeatures));
  }

  /**
   * The Linux probe and virtio_dev_probe sequence. `accept` filters the offered features (default:
   * all of them). Returns the accepted features; throws if the device refused FEATURES_OK.
   */
  init(opts: { accept?: (offered: bigint) => bigint; queueSizes?: number[] } = {}): bigint {
    this.setReg(MmioReg.Status, 0);
    this.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE);
    this.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    const offered = this.deviceFeatures();
    const features = opts.accept?.(offered) ?? offered;
    this.setReg(MmioReg.DriverFeaturesSel, 1);
    this.setReg(MmioReg.DriverFeatures, Number(features >> 32n));
    this.setReg(MmioReg.DriverFeaturesSel, 0);
    this.setReg(MmioReg.DriverFeatures, Number(features & 0xffffffffn));
    this.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if ((this.reg(MmioReg.Status) & STATUS_FEATURES_OK) === 0) throw new Error("device refused FEATURES_OK");
    this.queues = [];
    for (let i = 0; ; i++) {
      this.setReg(MmioReg.QueueSel, i);
      const max = this.reg(MmioReg.QueueNumMax);
      if (max === 0) break;
      const size = Math.min(max, opts.queueSizes?.[i] ?? 16);
      const q = new DriverQueue(this, i, size);
      this.memory.fill(RINGS_BASE + i * RING_AREA, RING_AREA, 0);
      this.setReg(MmioReg.QueueNum, size);
      this.setReg(MmioReg.QueueDescLow, q.desc);
      this.setReg(MmioReg.QueueDescHigh, 0);
      this.setReg(MmioReg.QueueDriverLow, q.avail);
      this.setReg(MmioReg.QueueDriverHigh, 0);
      this.setReg(MmioReg.QueueDeviceLow, q.used);
      this.setReg(MmioReg.QueueDeviceHigh, 0);
      this.setReg(MmioReg.QueueReady, 1);
      this.queues.push(q);
    }
    this.setReg(MmioReg.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    return features;
  }

  queue(i: number): DriverQueue {
    const q = this.queues[i];
    if (q === undefined) throw new Error(`no queue ${i}`);
    return q;
  }

  /** What the guest's interrupt handler does: read InterruptStatus and acknowledge it. */
  ackInterrupt(): number {
    const status = this.reg(MmioReg.InterruptStatus);
    this.setReg(MmioReg.InterruptAck, status);
    return status;
  }

  status(): number {
    return this.reg(MmioReg.Status);
  }

  /** Reads config space bytes [offset, offset+len) with byte accesses. */
  config(offset: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    for (let i = 0; i < len; i++) out[i] = this.transport.read(MmioReg.Config + offset + i, 1);
    return out;
  }
}

/** Resolves after pending I/O callbacks ran (host sockets, files): polls `cond` up to `ms`. */
export async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 5));
  }
}
