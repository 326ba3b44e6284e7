/** Counters of a virtio-net device (Firecracker's net/metrics.rs), read by statistics. */
export type NetMetrics = {
  /** Frames and payload bytes (without the virtio_net_hdr) guest to host. */
  txPackets: number;
  txBytes: number;
  /** Frames dropped on transmit: malformed chains, a full TAP queue, TAP errors. */
  txDropped: number;
  /** Frames and bytes host to guest. */
  rxPackets: number;
  rxBytes: number;
  /** Frames dropped on receive: larger than the guest's buffer. */
  rxDropped: number;
};

export function createNetMetrics(): NetMetrics {
  return { txPackets: 0, txBytes: 0, txDropped: 0, rxPackets: 0, rxBytes: 0, rxDropped: 0 };
}
