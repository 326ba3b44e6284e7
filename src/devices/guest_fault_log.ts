/**
 * What a device does with a misbehaving guest (CONVENTIONS.md, "Errors"): count it, log it at a
 * bounded rate, answer the access and go on. Never an exception: the guest decides what it writes
 * to its own hardware, and a VMM that throws on guest input is a denial of service.
 */

/** Where device warnings go; tests replace it to keep their output quiet or to inspect it. */
export type DeviceLogSink = (line: string) => void;

let sink: DeviceLogSink = (line) => process.stderr.write(`${line}\n`);

/** Replaces the sink of every device log (returns the previous one, to restore it). */
export function setDeviceLogSink(next: DeviceLogSink): DeviceLogSink {
  const previous = sink;
  sink = next;
  return previous;
}

/**
 * A per-device counter of guest misbehaviour with a token bucket on the log lines: at most
 * `burst` lines, refilled at `perSecond`, then one summary of how many were suppressed. Uses the
 * host's wall clock (never guest-visible).
 */
export class GuestFaultLog {
  /** Every reported event, logged or not. */
  count = 0;
  private suppressed = 0;
  private tokens: number;
  private last = Date.now();

  constructor(
    private readonly prefix: string,
    private readonly perSecond = 2,
    private readonly burst = 10,
  ) {
    this.tokens = burst;
  }

  report(message: string): void {
    this.count++;
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) {
      this.suppressed++;
      return;
    }
    this.tokens -= 1;
    const note = this.suppressed > 0 ? ` (${this.suppressed} similar suppressed)` : "";
    this.suppressed = 0;
    sink(`${this.prefix}: ${message}${note}`);
  }
}

/** Hex for log lines: `hex(0x3f8)` is "0x3f8". */
export function hex(value: number): string {
  return `0x${(value >>> 0).toString(16)}`;
}

/**
 * Byte-register devices (UART, RTC, i8042, PIC, PIT) on an 8-bit ISA bus: a 16- or 32-bit access
 * is the sequence of byte accesses at consecutive ports, low byte first (what the chipset does
 * with `in ax, dx` to an 8-bit device). Bytes past the device's range read as 0xff.
 */
export function readBytes(
  readByte: (offset: number) => number,
  offset: number,
  size: 1 | 2 | 4,
  length: number,
) {
  if (size === 1) return readByte(offset);
  let value = 0;
  for (let i = 0; i < size; i++) {
    const b = offset + i < length ? readByte(offset + i) & 0xff : 0xff;
    value |= b << (8 * i);
  }
  return value >>> 0;
}

/** The write counterpart of `readBytes`: bytes past the range are dropped. */
export function writeBytes(
  writeByte: (offset: number, value: number) => void,
  offset: number,
  size: 1 | 2 | 4,
  value: number,
  length: number,
): void {
  if (size === 1) {
    writeByte(offset, value & 0xff);
    return;
  }
  for (let i = 0; i < size && offset + i < length; i++) writeByte(offset + i, (value >>> (8 * i)) & 0xff);
}
