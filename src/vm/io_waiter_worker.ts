/** The waiter thread of io_waiter.ts: poll(2) on the published descriptors, kick on readiness. */
import { workerData } from "node:worker_threads";
import { VcpuLink } from "../engines/kvm/vcpu_link.js";
import { poll } from "../sys/libc.js";
import { W_COUNT, W_FDS, W_PENDING, W_QUIT, W_VERSION } from "./io_waiter.js";

const { words: buffer, kickLink } = workerData as { words: SharedArrayBuffer; kickLink: SharedArrayBuffer };
const words = new Int32Array(buffer);
const machine = new VcpuLink(kickLink);
while (Atomics.load(words, W_QUIT) === 0) {
  const count = Atomics.load(words, W_COUNT);
  if (count === 0) {
    // Nothing to watch yet (devices not activated by the guest driver): wait for a change.
    Atomics.wait(words, W_VERSION, Atomics.load(words, W_VERSION), 500);
    continue;
  }
  const fds: { fd: number; events: number }[] = [];
  for (let i = 0; i < count; i++) fds.push({ fd: words[W_FDS + 2 * i]!, events: words[W_FDS + 2 * i + 1]! });
  let ready = false;
  try {
    ready = poll(fds, 100).some((r) => r !== 0);
  } catch {
    // A descriptor closed under us (device reset): wait for the new set.
    Atomics.wait(words, W_VERSION, Atomics.load(words, W_VERSION), 100);
    continue;
  }
  if (!ready) continue;
  Atomics.store(words, W_PENDING, 1);
  machine.kick();
  // Until the machine thread has polled its devices (it clears PENDING), do not poll again.
  while (Atomics.load(words, W_PENDING) === 1 && Atomics.load(words, W_QUIT) === 0) {
    if (Atomics.wait(words, W_PENDING, 1, 100) === "timed-out") machine.kick();
  }
}
