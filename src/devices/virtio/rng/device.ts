/**
 * virtio-rng (virtio 1.2 §5.4, "Entropy Device"): one request queue; the driver posts writable
 * buffers and the device fills them with random bytes from the host (crypto.randomFillSync, the
 * kernel's getrandom). Linux's drivers/char/hw_random/virtio-rng.c posts one buffer at a time.
 */
import { randomFillSync } from "node:crypto";
import type { GuestMemory } from "../../../memory/guest_memory.js";
import { ChainWriter, type Virtqueue } from "../queue.js";
import {
  type ActivateContext,
  VIRTIO_ID_RNG,
  type VirtioDevice,
  type VirtioInterrupt,
} from "../virtio_device.js";
import { createRngMetrics } from "./metrics.js";

/** Bytes of entropy given per request at most (the driver asks for up to 64 bytes per read). */
export const RNG_MAX_REQUEST_BYTES = 64 * 1024;

export class RngDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_RNG;
  readonly name = "virtio-rng";
  readonly queueMaxSizes = [256];
  readonly features = 0n;
  readonly metrics = createRngMetrics();
  private queue: Virtqueue | undefined;
  private interrupt: VirtioInterrupt | undefined;

  constructor(private readonly memory: GuestMemory) {}

  readConfig(): number {
    return 0; // no configuration space
  }

  writeConfig(): void {}

  activate(ctx: ActivateContext): void {
    this.queue = ctx.queues[0];
    this.interrupt = ctx.interrupt;
  }

  queueNotify(): void {
    const q = this.queue;
    if (q === undefined) return;
    for (let chain = q.pop(); chain !== undefined; chain = q.pop()) {
      const writer = new ChainWriter(this.memory, chain.writable, chain.writableBytes);
      if (chain.writableBytes === 0) this.metrics.badRequests++;
      for (const view of writer.views(Math.min(chain.writableBytes, RNG_MAX_REQUEST_BYTES)))
        randomFillSync(view);
      q.addUsed(chain.head, writer.written);
      this.metrics.requests++;
      this.metrics.bytes += writer.written;
    }
    if (q.needsNotification()) this.interrupt?.signalUsedBuffer();
  }

  reset(): void {
    this.queue = undefined;
    this.interrupt = undefined;
  }
}
