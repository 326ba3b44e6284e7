/** Counters of a virtio-console device (Firecracker-style metrics), read by statistics. */
export type ConsoleMetrics = {
  /** Bytes the guest wrote (transmitq). */
  txBytes: number;
  /** Bytes delivered to the guest (receiveq). */
  rxBytes: number;
  /** Host input bytes dropped because the pending-input buffer was full. */
  rxDropped: number;
};

export function createConsoleMetrics(): ConsoleMetrics {
  return { txBytes: 0, rxBytes: 0, rxDropped: 0 };
}
