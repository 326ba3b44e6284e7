/** Counters of a virtio-vsock device (Firecracker's vsock/metrics.rs), read by statistics. */
export type VsockMetrics = {
  /** Packets taken from the guest's tx queue / put in its rx queue. */
  txPackets: number;
  rxPackets: number;
  /** Payload bytes guest to host / host to guest. */
  txBytes: number;
  rxBytes: number;
  /** Connections opened by the host (CONNECT) / by the guest (to <uds>_<port>). */
  hostConnections: number;
  guestConnections: number;
  /** Connections refused or reset (RST sent). */
  resets: number;
  /** Malformed packets and buffers dropped. */
  badPackets: number;
};

export function createVsockMetrics(): VsockMetrics {
  return {
    txPackets: 0,
    rxPackets: 0,
    txBytes: 0,
    rxBytes: 0,
    hostConnections: 0,
    guestConnections: 0,
    resets: 0,
    badPackets: 0,
  };
}
