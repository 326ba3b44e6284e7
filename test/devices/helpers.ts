import type { AccessSize, Device, IrqLine } from "../../src/bus/device.js";
import { setDeviceLogSink } from "../../src/devices/guest_fault_log.js";

/** An IrqLine that records its level and every transition. */
export class RecordingIrq implements IrqLine {
  level = false;
  rises = 0;
  falls = 0;
  setLevel(high: boolean): void {
    if (high && !this.level) this.rises++;
    if (!high && this.level) this.falls++;
    this.level = high;
  }
}

/** Collects device log lines instead of printing them; returns the list and a restore function. */
export function captureDeviceLog(): { lines: string[]; restore: () => void } {
  const lines: string[] = [];
  const previous = setDeviceLogSink((line) => lines.push(line));
  return { lines, restore: () => setDeviceLogSink(previous) };
}

/** A small deterministic PRNG (xorshift32) for hostile-input tests. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/**
 * Hammers a device with random reads and writes of every size at every offset of its range
 * (and a few past it); the caller asserts nothing threw. Returns the number of accesses.
 */
export function hammer(device: Device, length: number, rounds = 20000, seed = 12345): number {
  const rnd = prng(seed);
  const sizes: AccessSize[] = [1, 2, 4];
  for (let i = 0; i < rounds; i++) {
    const r = rnd();
    const offset = r % (length + 4);
    const size = sizes[(r >>> 16) % 3]!;
    if (r & 0x80000000) {
      const v = device.read(offset, size);
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`read returned ${v}`);
    } else {
      device.write(offset, size, rnd());
    }
  }
  return rounds;
}
