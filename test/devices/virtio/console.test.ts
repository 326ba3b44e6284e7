import assert from "node:assert/strict";
import { test } from "node:test";
import { CONSOLE_MAX_PENDING_INPUT, ConsoleDevice } from "../../../src/devices/virtio/console/device.js";
import { VIRTIO_ID_CONSOLE } from "../../../src/devices/virtio/virtio_device.js";
import { MmioReg } from "../../../src/devices/virtio/transport_mmio.js";
import { VirtioTestHelper } from "./virtio_test_helper.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function console0(out: Uint8Array[] = []) {
  const h = new VirtioTestHelper((m) => new ConsoleDevice(m, { onOutput: (b) => out.push(b) }));
  h.init();
  return { h, dev: h.device as ConsoleDevice, out };
}

test("virtio-console passes what the guest writes on port 0 to the host", () => {
  const { h, out } = console0();
  assert.equal(h.reg(MmioReg.DeviceId), VIRTIO_ID_CONSOLE);
  h.queue(1).add([{ data: enc("hello ") }, { data: enc("hvc0\n") }]);
  assert.equal(out.map(dec).join(""), "hello hvc0\n");
  assert.deepEqual(
    h
      .queue(1)
      .takeUsed()
      .map((u) => u.len),
    [0],
  );
  assert.equal(h.irq.high, true);
});

test("virtio-console holds host input until the guest posts a buffer, then splits it across buffers", () => {
  const { h, dev } = console0();
  dev.input(enc("ls -l\n"));
  assert.equal(h.queue(0).takeUsed().length, 0);
  const a = h.queue(0).add([{ writable: 4 }]);
  const b = h.queue(0).add([{ writable: 16 }]);
  const used = h.queue(0).takeUsed();
  assert.deepEqual(
    used.map((u) => [u.id, u.len]),
    [
      [a.head, 4],
      [b.head, 2],
    ],
  );
  assert.equal(dec(h.memory.read(a.addrs[0]!, 4)) + dec(h.memory.read(b.addrs[0]!, 2)), "ls -l\n");
  assert.equal(dev.metrics.rxBytes, 6);
});

test("virtio-console bounds pending input and counts what it drops", () => {
  const { dev } = console0();
  dev.input(new Uint8Array(CONSOLE_MAX_PENDING_INPUT + 100));
  dev.input(new Uint8Array(10));
  assert.equal(dev.metrics.rxDropped, 110);
});
