/**
 * Split virtqueues, device side (virtio 1.2 §2.7): the descriptor table, the available ring the
 * driver fills and the used ring the device fills, with indirect descriptors (§2.7.5.3) and
 * VIRTIO_F_EVENT_IDX notification suppression (§2.7.7, §2.7.10).
 *
 * Everything here is read from guest memory the guest can change at any time, so every index,
 * address and length is checked before use and every walk is bounded (CONVENTIONS.md, "Errors";
 * Firecracker's DescriptorChain checks): a chain is at most `size` descriptors, an indirect table
 * at most MAX_INDIRECT_DESCRIPTORS, a chain at most `maxChainBytes`, every buffer lies inside
 * guest RAM. A queue that meets a malformed chain or ring marks itself broken and reports it
 * (the transport sets DEVICE_NEEDS_RESET); it never throws into the device and never loops.
 *
 * Layout (virtio 1.2 §2.7.5, §2.7.6, §2.7.8; include/uapi/linux/virtio_ring.h):
 *   descriptor (16 bytes, 16-aligned): u64 addr, u32 len, u16 flags, u16 next
 *   available ring (2-aligned): u16 flags, u16 idx, u16 ring[size], u16 used_event
 *   used ring (4-aligned): u16 flags, u16 idx, {u32 id, u32 len} ring[size], u16 avail_event
 */
import type { GuestMemory } from "../../memory/guest_memory.js";
import { VirtioError } from "./virtio_device.js";

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** avail.flags bit: the driver asks for no used-buffer notifications (ignored with EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;

/** Largest queue size of a split virtqueue (virtio 1.2 §2.7: Queue Size at most 32768). */
export const MAX_QUEUE_SIZE = 32768;
/** Largest indirect table we accept, in descriptors (Linux never builds one longer than its sg list). */
export const MAX_INDIRECT_DESCRIPTORS = 1024;
/** Default bound on the bytes one chain may describe (readable + writable). */
export const DEFAULT_MAX_CHAIN_BYTES = 128 * 1024 * 1024;

/** One guest buffer of a chain: [addr, addr+len) lies inside guest memory. */
export interface Segment {
  addr: number;
  len: number;
}

/** A validated descriptor chain: device-readable buffers first, then device-writable ones (§2.7.4.2). */
export interface DescriptorChain {
  /** Head descriptor index: what goes back in the used ring. */
  head: number;
  readable: Segment[];
  writable: Segment[];
  readableBytes: number;
  writableBytes: number;
}

/** The queue configuration the driver writes through the transport's registers. */
export interface QueueConfig {
  size: number;
  ready: boolean;
  descTable: number;
  availRing: number;
  usedRing: number;
}

export interface QueueOptions {
  /** Bound on the bytes of one chain (default DEFAULT_MAX_CHAIN_BYTES). */
  maxChainBytes?: number;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirect?: boolean;
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx?: boolean;
  /** Called once when the queue breaks (the transport sets DEVICE_NEEDS_RESET). */
  onBroken?: (error: VirtioError) => void;
}

/** Counters of one queue, for statistics. */
export interface QueueStats {
  chains: number;
  used: number;
  notifications: number;
  suppressedNotifications: number;
}

/**
 * One split virtqueue over guest memory. The transport creates it with the driver's configuration
 * at DRIVER_OK; the device pops chains, consumes them, and returns them with `addUsed`, then asks
 * `needsNotification()` whether to interrupt the driver.
 */
export class Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly ready: boolean;
  private readonly descTable: number;
  private readonly availRing: number;
  private readonly usedRing: number;
  private readonly maxChainBytes: number;
  private readonly indirect: boolean;
  private readonly eventIdx: boolean;
  private readonly onBroken: ((error: VirtioError) => void) | undefined;
  /** Next available-ring position to read (free-running u16). */
  private nextAvail = 0;
  /** Next used-ring position to write (free-running u16). */
  private nextUsed = 0;
  /** used.idx when we last decided about a notification. */
  private signalledUsed = 0;
  /** Heads popped and not yet returned: a head returned twice or never popped is a device bug. */
  private readonly inFlight = new Set<number>();
  /** Why the queue stopped, if it did. */
  brokenReason: string | undefined;
  readonly stats: QueueStats = { chains: 0, used: 0, notifications: 0, suppressedNotifications: 0 };

  constructor(
    private readonly memory: GuestMemory,
    index: number,
    config: QueueConfig,
    options: QueueOptions = {},
  ) {
    this.index = index;
    this.size = config.size;
    this.ready = config.ready;
    this.descTable = config.descTable;
    this.availRing = config.availRing;
    this.usedRing = config.usedRing;
    this.maxChainBytes = options.maxChainBytes ?? DEFAULT_MAX_CHAIN_BYTES;
    this.indirect = options.indirect ?? false;
    this.eventIdx = options.eventIdx ?? false;
    this.onBroken = options.onBroken;
    if (this.ready) {
      const problem = this.checkLayout();
      if (problem !== undefined) this.markBroken("VIRTQ_LAYOUT", problem);
    }
    // A queue starts at index 0 of both rings (§2.7.13.1: the driver zeroes them before use).
  }

  /** The driver's configuration of this queue (to rebuild it in another thread: blk's I/O thread). */
  get config(): QueueConfig {
    return {
      size: this.size,
      ready: this.ready,
      descTable: this.descTable,
      availRing: this.availRing,
      usedRing: this.usedRing,
    };
  }

  /** The driver's configuration is usable: power-of-two size, aligned rings inside guest memory. */
  private checkLayout(): string | undefined {
    const n = this.size;
    if (!Number.isInteger(n) || n < 1 || n > MAX_QUEUE_SIZE || (n & (n - 1)) !== 0) {
      return `queue size ${n} is not a power of two in 1..${MAX_QUEUE_SIZE}`;
    }
    const rings: [string, number, number, number][] = [
      ["descriptor table", this.descTable, 16 * n, 16],
      ["available ring", this.availRing, 6 + 2 * n, 2],
      ["used ring", this.usedRing, 6 + 8 * n, 4],
    ];
    for (const [what, addr, len, align] of rings) {
      if (!Number.isSafeInteger(addr) || addr % align !== 0) {
        return `${what} at 0x${addr.toString(16)} is not ${align}-byte aligned`;
      }
      if (!this.memory.contains(addr, len)) {
        return `${what} at 0x${addr.toString(16)} (+${len}) is outside guest memory`;
      }
    }
    return undefined;
  }

  get broken(): boolean {
    return this.brokenReason !== undefined;
  }

  /** True if the queue is ready and not broken: the device may pop from it. */
  get usable(): boolean {
    return this.ready && this.brokenReason === undefined;
  }

  private markBroken(code: string, reason: string): void {
    if (this.brokenReason !== undefined) return;
    this.brokenReason = reason;
    this.onBroken?.(new VirtioError(code, `virtqueue ${this.index}: ${reason}`, { queue: this.index }));
  }

  /** avail.idx as the driver last published it. */
  private availIdx(): number {
    return this.memory.readU16(this.availRing + 2);
  }

  /** Number of chains the driver made available that we have not popped (checked ≤ size). */
  private pending(): number {
    const count = (this.availIdx() - this.nextAvail) & 0xffff;
    if (count > this.size) {
      this.markBroken(
        "VIRTQ_AVAIL_IDX",
        `avail.idx claims ${count} new entries, more than the queue size ${this.size}`,
      );
      return 0;
    }
    return count;
  }

  /** True if the driver has made a chain available that `pop` would return. */
  hasAvailable(): boolean {
    if (!this.usable) return false;
    return this.pending() > 0;
  }

  /**
   * Takes the next available chain, validated, or undefined if there is none (or the queue is
   * broken: it is then broken for good, until the driver resets the device).
   *
   * With EVENT_IDX, finding the ring empty publishes avail_event = the next index we will read,
   * asking the driver to notify us when it adds one more, then looks again (the driver may have
   * added one between our read and our write: §2.7.10).
   */
  pop(): DescriptorChain | undefined {
    if (!this.usable) return undefined;
    let count = this.pending();
    if (count === 0 && this.eventIdx && this.usable) {
      this.memory.writeU16(this.usedRing + 4 + 8 * this.size, this.nextAvail);
      count = this.pending();
    }
    if (count === 0 || !this.usable) return undefined;
    const head = this.memory.readU16(this.availRing + 4 + 2 * (this.nextAvail % this.size));
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    const chain = this.walk(head);
    if (chain === undefined) return undefined;
    if (this.inFlight.has(head)) {
      this.markBroken(
        "VIRTQ_HEAD_IN_USE",
        `descriptor ${head} made available again while the device still holds it`,
      );
      return undefined;
    }
    this.inFlight.add(head);
    this.stats.chains++;
    return chain;
  }

  /** Follows the chain at `head`, checking every descriptor; undefined (and broken) if malformed. */
  private walk(head: number): DescriptorChain | undefined {
    const chain: DescriptorChain = { head, readable: [], writable: [], readableBytes: 0, writableBytes: 0 };
    if (head >= this.size) {
      this.markBroken(
        "VIRTQ_HEAD",
        `available ring names descriptor ${head}, outside the table of ${this.size}`,
      );
      return undefined;
    }
    // The table being walked: the queue's own, or a private copy of an indirect table (so a guest
    // changing it while we read sees no effect, and we read it from guest memory only once).
    let table: DataView | undefined;
    let tableSize = this.size;
    let index = head;
    let seen = 0;
    let total = 0;
    for (;;) {
      if (index >= tableSize) {
        this.markBroken("VIRTQ_NEXT", `descriptor next=${index} is outside a table of ${tableSize}`);
        return undefined;
      }
      if (++seen > tableSize) {
        this.markBroken(
          "VIRTQ_CHAIN_LOOP",
          `chain from head ${head} is longer than its table of ${tableSize} (a loop?)`,
        );
        return undefined;
      }
      let addr: bigint;
      let len: number;
      let flags: number;
      let next: number;
      if (table === undefined) {
        const at = this.descTable + 16 * index;
        addr = this.memory.readU64(at);
        len = this.memory.readU32(at + 8);
        flags = this.memory.readU16(at + 12);
        next = this.memory.readU16(at + 14);
      } else {
        addr = table.getBigUint64(16 * index, true);
        len = table.getUint32(16 * index + 8, true);
        flags = table.getUint16(16 * index + 12, true);
        next = table.getUint16(16 * index + 14, true);
      }
      if (addr > BigInt(Number.MAX_SAFE_INTEGER)) {
        this.markBroken("VIRTQ_ADDR", `descriptor address 0x${addr.toString(16)} is outside guest memory`);
        return undefined;
      }
      const address = Number(addr);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // §2.7.5.3.1: only with the feature, never inside an indirect table, never with NEXT, a
        // whole number of descriptors.
        if (!this.indirect || table !== undefined || (flags & VIRTQ_DESC_F_NEXT) !== 0) {
          this.markBroken(
            "VIRTQ_INDIRECT",
            table !== undefined
              ? "indirect descriptor inside an indirect table"
              : !this.indirect
                ? "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC"
                : "indirect descriptor with VIRTQ_DESC_F_NEXT set",
          );
          return undefined;
        }
        const entries = len / 16;
        if (len === 0 || len % 16 !== 0 || entries > MAX_INDIRECT_DESCRIPTORS) {
          this.markBroken(
            "VIRTQ_INDIRECT_LEN",
            `indirect table of ${len} bytes (must be a non-zero multiple of 16, at most ${MAX_INDIRECT_DESCRIPTORS} entries)`,
          );
          return undefined;
        }
        if (!this.memory.contains(address, len)) {
          this.markBroken(
            "VIRTQ_ADDR",
            `indirect table at 0x${address.toString(16)}+${len} is outside guest memory`,
          );
          return undefined;
        }
        const copy = this.memory.read(address, len);
        table = new DataView(copy.buffer, copy.byteOffset, copy.byteLength);
        tableSize = entries;
        index = 0;
        seen = 0;
        continue;
      }
      total += len;
      if (total > this.maxChainBytes) {
        this.markBroken(
          "VIRTQ_CHAIN_BYTES",
          `chain from head ${head} describes more than ${this.maxChainBytes} bytes`,
        );
        return undefined;
      }
      if (len > 0 && !this.memory.contains(address, len)) {
        this.markBroken("VIRTQ_ADDR", `buffer 0x${address.toString(16)}+${len} is outside guest memory`);
        return undefined;
      }
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        chain.writable.push({ addr: address, len });
        chain.writableBytes += len;
      } else {
        if (chain.writable.length > 0) {
          this.markBroken("VIRTQ_ORDER", "device-readable descriptor after a device-writable one");
          return undefined;
        }
        chain.readable.push({ addr: address, len });
        chain.readableBytes += len;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return chain;
      index = next;
    }
  }

  /**
   * Returns a popped chain to the driver with `len` bytes written into its writable buffers
   * (§2.7.8). The element is written before used.idx (x86 keeps stores in order; the driver reads
   * idx first and then the element).
   */
  addUsed(head: number, len: number): void {
    if (!this.usable) return;
    if (!this.inFlight.delete(head)) {
      throw new VirtioError(
        "VIRTQ_USED_HEAD",
        `virtqueue ${this.index}: device returned head ${head} it does not hold`,
      );
    }
    const slot = this.usedRing + 4 + 8 * (this.nextUsed % this.size);
    this.memory.writeU32(slot, head);
    this.memory.writeU32(slot + 4, len >>> 0);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    this.memory.writeU16(this.usedRing + 2, this.nextUsed);
    this.stats.used++;
  }

  /**
   * Whether the driver wants an interrupt for the buffers used since the last call (§2.7.7.2):
   * with EVENT_IDX, when used.idx passed used_event (vring_need_event); without, unless
   * avail.flags has NO_INTERRUPT.
   */
  needsNotification(): boolean {
    if (!this.usable) return false;
    const newIdx = this.nextUsed;
    const oldIdx = this.signalledUsed;
    this.signalledUsed = newIdx;
    if (newIdx === oldIdx) return false;
    let need: boolean;
    if (this.eventIdx) {
      const usedEvent = this.memory.readU16(this.availRing + 4 + 2 * this.size);
      need = ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    } else {
      need = (this.memory.readU16(this.availRing) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (need) this.stats.notifications++;
    else this.stats.suppressedNotifications++;
    return need;
  }

  /** Number of chains popped and not yet returned. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }
}

/**
 * A chain's buffers (its readable or its writable part) as one byte stream, consumed in order by
 * views into guest memory. Lengths asked for are bounded by what the buffers hold, itself bounded
 * by the queue's maxChainBytes.
 */
abstract class ChainCursor {
  private seg = 0;
  private off = 0;
  /** Bytes consumed so far. */
  protected consumed = 0;

  constructor(
    private readonly memory: GuestMemory,
    private readonly segments: readonly Segment[],
    private readonly total: number = segments.reduce((n, s) => n + s.len, 0),
  ) {}

  get remaining(): number {
    return this.total - this.consumed;
  }

  /**
   * Views into guest memory for the next `len` bytes (no copy); consumes them. Fewer bytes if the
   * chain holds fewer.
   */
  views(len: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let left = Math.min(len, this.remaining);
    while (left > 0) {
      const s = this.segments[this.seg]!;
      const n = Math.min(left, s.len - this.off);
      if (n > 0) out.push(this.memory.slice(s.addr + this.off, n));
      this.off += n;
      this.consumed += n;
      left -= n;
      if (this.off >= s.len) {
        this.seg++;
        this.off = 0;
      }
    }
    return out;
  }
}

/** Reads the device-readable part of a chain as one byte stream, across its buffers. */
export class ChainReader extends ChainCursor {
  /** Copies the next `len` bytes (fewer if the chain holds fewer). */
  read(len: number): Uint8Array {
    const parts = this.views(len);
    if (parts.length === 1) return parts[0]!.slice();
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  skip(len: number): void {
    this.views(len);
  }
}

/** Writes into the device-writable part of a chain as one byte stream, across its buffers. */
export class ChainWriter extends ChainCursor {
  /** Bytes written so far: the `len` to put in the used ring. */
  get written(): number {
    return this.consumed;
  }

  /** Writes as much of `data` as fits; returns the number of bytes written. */
  write(data: Uint8Array): number {
    let at = 0;
    for (const v of this.views(data.length)) {
      v.set(data.subarray(at, at + v.length));
      at += v.length;
    }
    return at;
  }

  /** Writes `len` zero bytes (fewer if the chain has less room). */
  zero(len: number): number {
    let n = 0;
    for (const v of this.views(len)) {
      v.fill(0);
      n += v.length;
    }
    return n;
  }
}
