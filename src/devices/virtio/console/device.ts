/**
 * virtio-console (virtio 1.2 §5.3) with a single port, port 0, which Linux's
 * drivers/char/virtio_console.c makes the hvc0 console: queue 0 is receiveq (host to guest),
 * queue 1 transmitq (guest to host). No MULTIPORT, so no control queues.
 *
 * The host side is two plain hooks the machine assembly connects to its console: `onOutput`
 * receives what the guest writes, `input()` queues bytes for the guest (bounded: excess input is
 * dropped and counted, never buffered without limit).
 */
import type { GuestMemory } from "../../../memory/guest_memory.js";
import { ChainReader, ChainWriter, type Virtqueue } from "../queue.js";
import {
  type ActivateContext,
  readConfigBytes,
  VIRTIO_ID_CONSOLE,
  type VirtioDevice,
  type VirtioInterrupt,
} from "../virtio_device.js";
import { createConsoleMetrics } from "./metrics.js";

export const CONSOLE_QUEUE_SIZE = 256;
/** Host input waiting for guest buffers, at most. */
export const CONSOLE_MAX_PENDING_INPUT = 64 * 1024;
const RX = 0;
const TX = 1;

export interface ConsoleOptions {
  /** Receives what the guest writes to hvc0 (called synchronously from the transmitq notify). */
  onOutput?: (bytes: Uint8Array) => void;
}

export class ConsoleDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_CONSOLE;
  readonly name = "virtio-console";
  readonly queueMaxSizes = [CONSOLE_QUEUE_SIZE, CONSOLE_QUEUE_SIZE];
  readonly features = 0n;
  /** Bounds one transmit chain: Linux writes at most a page per buffer. */
  readonly maxChainBytes = 1024 * 1024;
  readonly metrics = createConsoleMetrics();
  /** struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr (only read with their features). */
  private readonly config = new Uint8Array(12);
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private queues: readonly Virtqueue[] = [];
  private interrupt: VirtioInterrupt | undefined;
  onOutput: (bytes: Uint8Array) => void;

  constructor(
    private readonly memory: GuestMemory,
    options: ConsoleOptions = {},
  ) {
    this.onOutput = options.onOutput ?? (() => {});
  }

  readConfig(offset: number, size: 1 | 2 | 4): number {
    return readConfigBytes(this.config, offset, size);
  }

  writeConfig(): void {}

  activate(ctx: ActivateContext): void {
    this.queues = ctx.queues;
    this.interrupt = ctx.interrupt;
    this.deliver();
  }

  queueNotify(index: number): void {
    if (index === TX) this.transmit();
    else if (index === RX) this.deliver();
  }

  /** Queues host input (keyboard bytes) for the guest; delivers at once if it has buffers posted. */
  input(bytes: Uint8Array): void {
    const room = CONSOLE_MAX_PENDING_INPUT - this.pendingBytes;
    if (bytes.length > room) {
      this.metrics.rxDropped += bytes.length - room;
      bytes = bytes.subarray(0, room);
    }
    if (bytes.length === 0) return;
    this.pending.push(bytes.slice());
    this.pendingBytes += bytes.length;
    this.deliver();
  }

  private transmit(): void {
    const q = this.queues[TX];
    if (q === undefined) return;
    for (let chain = q.pop(); chain !== undefined; chain = q.pop()) {
      const bytes = new ChainReader(this.memory, chain.readable, chain.readableBytes).read(
        chain.readableBytes,
      );
      this.metrics.txBytes += bytes.length;
      if (bytes.length > 0) this.onOutput(bytes);
      q.addUsed(chain.head, 0);
    }
    if (q.needsNotification()) this.interrupt?.signalUsedBuffer();
  }

  private deliver(): void {
    const q = this.queues[RX];
    if (q === undefined || this.pendingBytes === 0) return;
    while (this.pendingBytes > 0) {
      const chain = q.pop();
      if (chain === undefined) break;
      const writer = new ChainWriter(this.memory, chain.writable, chain.writableBytes);
      while (writer.remaining > 0 && this.pending.length > 0) {
        const head = this.pending[0]!;
        const n = writer.write(head);
        this.pendingBytes -= n;
        this.metrics.rxBytes += n;
        if (n === head.length) this.pending.shift();
        else this.pending[0] = head.subarray(n);
      }
      q.addUsed(chain.head, writer.written);
    }
    if (q.needsNotification()) this.interrupt?.signalUsedBuffer();
  }

  reset(): void {
    this.queues = [];
    this.interrupt = undefined;
  }
}
