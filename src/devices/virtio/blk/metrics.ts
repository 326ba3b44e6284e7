/** Counters of a virtio-blk device (Firecracker's block/metrics.rs), read by statistics. */
export type BlkMetrics = {
  reads: number;
  writes: number;
  readBytes: number;
  writeBytes: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
  getIds: number;
  /** Requests answered VIRTIO_BLK_S_IOERR (out of range, read-only, host I/O error). */
  ioErrors: number;
  /** Requests answered VIRTIO_BLK_S_UNSUPP. */
  unsupported: number;
  /** Chains too malformed to carry a status byte (returned with length 0). */
  badRequests: number;
};

export function createBlkMetrics(): BlkMetrics {
  return {
    reads: 0,
    writes: 0,
    readBytes: 0,
    writeBytes: 0,
    flushes: 0,
    discards: 0,
    writeZeroes: 0,
    getIds: 0,
    ioErrors: 0,
    unsupported: 0,
    badRequests: 0,
  };
}
