/**
 * virtio-blk requests (virtio 1.2 §5.2.6), served from a queue against a DiskFile. A request is
 * a chain:
 *   struct virtio_blk_outhdr { le32 type; le32 ioprio; le64 sector; }   device-readable
 *   data                                                                  readable (OUT, DISCARD,
 *                                                                         WRITE_ZEROES) or writable (IN, GET_ID)
 *   u8 status                                                             the last writable byte
 * Used by the device in the machine worker and by the blk I/O thread alike (io_thread.ts).
 */
import type { GuestMemory } from "../../../memory/guest_memory.js";
import type { GuestFaultLog } from "../../guest_fault_log.js";
import { ChainReader, ChainWriter, type DescriptorChain, type Segment, type Virtqueue } from "../queue.js";
import { type DiskFile, SECTOR_SIZE } from "./disk_file.js";
import type { BlkMetrics } from "./metrics.js";

/** Feature bits (include/uapi/linux/virtio_blk.h). */
export const VIRTIO_BLK_F_SIZE_MAX = 1n << 1n;
export const VIRTIO_BLK_F_SEG_MAX = 1n << 2n;
export const VIRTIO_BLK_F_RO = 1n << 5n;
export const VIRTIO_BLK_F_FLUSH = 1n << 9n;
export const VIRTIO_BLK_F_DISCARD = 1n << 13n;
export const VIRTIO_BLK_F_WRITE_ZEROES = 1n << 14n;

/** Request types. */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
/** Status byte values. */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
/** GET_ID answers at most this many bytes (VIRTIO_BLK_ID_BYTES). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags. */
const DWZ_RANGE_SIZE = 16;
const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** Queue size, and the request limits announced in the config space (bounding every request). */
export const BLK_QUEUE_SIZE = 256;
export const BLK_SEG_MAX = BLK_QUEUE_SIZE - 2;
export const BLK_SIZE_MAX = 256 * 1024;
export const BLK_MAX_DWZ_SECTORS = 1 << 22; // 2 GiB per range
export const BLK_MAX_DWZ_SEGMENTS = 32;
/** Bytes of one request at most: SEG_MAX segments of SIZE_MAX, plus the header and status. */
export const BLK_MAX_REQUEST_BYTES = BLK_SEG_MAX * BLK_SIZE_MAX + 4096;

export class BlkRequestHandler {
  /** Features the driver accepted (FLUSH decides write-through). */
  acked = 0n;

  constructor(
    private readonly memory: GuestMemory,
    private readonly disk: DiskFile,
    private readonly serial: Uint8Array,
    readonly metrics: BlkMetrics,
    private readonly faults: GuestFaultLog,
  ) {}

  /** Serves every available request of `q`; returns whether the driver wants an interrupt. */
  serve(q: Virtqueue): boolean {
    for (let chain = q.pop(); chain !== undefined; chain = q.pop()) {
      q.addUsed(chain.head, this.handle(chain));
    }
    return q.needsNotification();
  }

  /** Serves one request; returns the bytes written into the chain (the used length). */
  handle(chain: DescriptorChain): number {
    if (chain.readableBytes < 16 || chain.writableBytes < 1) {
      this.metrics.badRequests++;
      this.faults.report(
        `request without a header or a status byte (${chain.readableBytes} readable, ${chain.writableBytes} writable bytes)`,
      );
      return 0;
    }
    const reader = new ChainReader(this.memory, chain.readable, chain.readableBytes);
    const header = reader.read(16);
    const hv = new DataView(header.buffer, header.byteOffset, 16);
    const type = hv.getUint32(0, true);
    const sector = hv.getBigUint64(8, true);
    const dataRoom = chain.writableBytes - 1;
    const writer = new ChainWriter(this.memory, chain.writable, dataRoom);
    const statusAddr = byteAddress(chain.writable, dataRoom);
    let status: number;
    try {
      status = this.execute(type, sector, reader, writer);
    } catch (err) {
      this.faults.report(`host I/O error on ${JSON.stringify(this.disk.path)}: ${(err as Error).message}`);
      status = VIRTIO_BLK_S_IOERR;
    }
    if (status === VIRTIO_BLK_S_IOERR) this.metrics.ioErrors++;
    else if (status === VIRTIO_BLK_S_UNSUPP) this.metrics.unsupported++;
    this.memory.writeU8(statusAddr, status);
    return writer.written + 1;
  }

  private execute(type: number, sector: bigint, reader: ChainReader, writer: ChainWriter): number {
    switch (type) {
      case VIRTIO_BLK_T_IN: {
        const len = writer.remaining;
        const offset = this.dataOffset(sector, len);
        if (offset === undefined) return VIRTIO_BLK_S_IOERR;
        this.disk.readInto(writer.views(len), offset);
        this.metrics.reads++;
        this.metrics.readBytes += len;
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_OUT: {
        if (this.disk.readOnly) return VIRTIO_BLK_S_IOERR; // §5.2.6.2 with VIRTIO_BLK_F_RO
        const len = reader.remaining;
        const offset = this.dataOffset(sector, len);
        if (offset === undefined) return VIRTIO_BLK_S_IOERR;
        this.disk.writeFrom(reader.views(len), offset);
        if ((this.acked & VIRTIO_BLK_F_FLUSH) === 0n) this.disk.flush();
        this.metrics.writes++;
        this.metrics.writeBytes += len;
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_FLUSH:
        if (!this.disk.readOnly) this.disk.flush();
        this.metrics.flushes++;
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_GET_ID: {
        const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
        id.set(this.serial);
        writer.write(id.subarray(0, Math.min(VIRTIO_BLK_ID_BYTES, writer.remaining)));
        this.metrics.getIds++;
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.discardOrZero(type, reader);
      default:
        return VIRTIO_BLK_S_UNSUPP;
    }
  }

  /**
   * Byte offset of a data transfer of `len` bytes at `sector`, or undefined if it is not whole
   * sectors inside the disk (§5.2.6.1: the device MUST reject such requests with IOERR).
   */
  private dataOffset(sector: bigint, len: number): number | undefined {
    const sectors = this.disk.sectors;
    if (len % SECTOR_SIZE !== 0 || sector > BigInt(sectors) || Number(sector) + len / SECTOR_SIZE > sectors) {
      this.faults.report(
        `request of ${len} bytes at sector ${sector} is outside the disk of ${sectors} sectors`,
      );
      return undefined;
    }
    return Number(sector) * SECTOR_SIZE;
  }

  private discardOrZero(type: number, reader: ChainReader): number {
    const negotiated = type === VIRTIO_BLK_T_DISCARD ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES;
    if ((this.acked & negotiated) === 0n) return VIRTIO_BLK_S_UNSUPP;
    if (this.disk.readOnly) return VIRTIO_BLK_S_IOERR;
    const bytes = reader.remaining;
    const count = bytes / DWZ_RANGE_SIZE;
    if (!Number.isInteger(count) || count < 1 || count > BLK_MAX_DWZ_SEGMENTS) {
      this.faults.report(`discard/write-zeroes with ${bytes} bytes of ranges`);
      return VIRTIO_BLK_S_IOERR;
    }
    const raw = reader.read(bytes);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const ranges: [number, number][] = [];
    for (let i = 0; i < count; i++) {
      const sector = dv.getBigUint64(16 * i, true);
      const num = dv.getUint32(16 * i + 8, true);
      const flags = dv.getUint32(16 * i + 12, true);
      // §5.2.6.2: unknown flags (and UNMAP on a discard) are unsupported.
      const allowed = type === VIRTIO_BLK_T_WRITE_ZEROES ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
      if ((flags & ~allowed) !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (num > BLK_MAX_DWZ_SECTORS) return VIRTIO_BLK_S_IOERR;
      const offset = this.dataOffset(sector, num * SECTOR_SIZE);
      if (offset === undefined) return VIRTIO_BLK_S_IOERR;
      ranges.push([offset, num * SECTOR_SIZE]);
    }
    for (const [offset, len] of ranges) if (len > 0) this.disk.zeroRange(offset, len);
    if (type === VIRTIO_BLK_T_DISCARD) this.metrics.discards++;
    else this.metrics.writeZeroes++;
    return VIRTIO_BLK_S_OK;
  }
}

/** Guest address of byte `pos` of a run of segments (pos < their total length). */
function byteAddress(segments: readonly Segment[], pos: number): number {
  for (const s of segments) {
    if (pos < s.len) return s.addr + pos;
    pos -= s.len;
  }
  throw new RangeError("byte position past the end of the chain");
}
