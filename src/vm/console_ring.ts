/**
 * A single-producer, single-consumer byte ring over a SharedArrayBuffer: console input from the
 * main thread (which owns stdin) to the machine thread (which owns the UART). Int32 words:
 * [0] total bytes written, [1] total bytes read (both only grow; indexes are taken modulo the
 * capacity). The consumer can sleep on word 0 with Atomics.wait.
 */
export class ConsoleRing {
  readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  readonly capacity: number;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(8 + 4096)) {
    this.buffer = buffer;
    this.words = new Int32Array(buffer, 0, 2);
    this.bytes = new Uint8Array(buffer, 8);
    this.capacity = this.bytes.length;
  }

  /** Producer: appends what fits; returns how many bytes were taken. */
  write(data: Uint8Array): number {
    const w = Atomics.load(this.words, 0);
    const r = Atomics.load(this.words, 1);
    const n = Math.min(data.length, this.capacity - (w - r));
    for (let i = 0; i < n; i++) this.bytes[(w + i) % this.capacity] = data[i]!;
    Atomics.store(this.words, 0, w + n);
    Atomics.notify(this.words, 0);
    return n;
  }

  /** Consumer: bytes available to read. */
  available(): number {
    return Atomics.load(this.words, 0) - Atomics.load(this.words, 1);
  }

  /** Consumer: takes up to `max` bytes. */
  read(max: number): Uint8Array {
    const w = Atomics.load(this.words, 0);
    const r = Atomics.load(this.words, 1);
    const n = Math.min(max, w - r);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.bytes[(r + i) % this.capacity]!;
    Atomics.store(this.words, 1, r + n);
    return out;
  }

  /** Consumer: sleeps until the producer writes or `ms` pass. */
  waitForData(ms: number): void {
    const w = Atomics.load(this.words, 0);
    if (w !== Atomics.load(this.words, 1)) return;
    Atomics.wait(this.words, 0, w, Math.max(0, ms));
  }

  /** Wakes a consumer sleeping in waitForData (e.g. to make it see a stop request). */
  wake(): void {
    Atomics.notify(this.words, 0);
  }
}
