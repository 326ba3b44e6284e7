/** Counters of a virtio-rng device (Firecracker's rng/metrics.rs), read by statistics. */
export type RngMetrics = {
  /** Requests served (chains used). */
  requests: number;
  /** Random bytes written into the guest. */
  bytes: number;
  /** Requests with no writable buffer. */
  badRequests: number;
};

export function createRngMetrics(): RngMetrics {
  return { requests: 0, bytes: 0, badRequests: 0 };
}
