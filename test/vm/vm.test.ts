import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Vm } from "../../src/vm/vm.js";
import { syntheticBzImage } from "../boot/synthetic_bzimage.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "../../..");
const skip =
  spawnSync("nasm", ["-v"]).status !== 0
    ? "nasm is not installed"
    : existsSync("/dev/kvm")
      ? undefined
      : "no /dev/kvm on this host";

function tickerKernel(): string {
  const dir = mkdtempSync(join(tmpdir(), "vessel-vm-"));
  const bin = join(dir, "ticker.bin");
  const r = spawnSync("nasm", ["-f", "bin", "-o", bin, join(root, "test/vm/payloads/ticker_kernel.asm")]);
  assert.equal(r.status, 0);
  const image = syntheticBzImage({ payloadSize: 4096 });
  image.set(readFileSync(bin), (image[0x1f1]! + 1) * 512 + 0x200);
  const path = join(dir, "ticker.bzImage");
  writeFileSync(path, image);
  return path;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(20);
  }
}

test("Vm: pause stops the guest on every vCPU, resume continues it, stop ends the run", {
  skip,
}, async () => {
  let dots = 0;
  const vm = Vm.start(
    { engine: "kvm", kernel: tickerKernel(), cmdline: "", memBytes: 64 << 20, cpus: 2 },
    { onOutput: (b) => (dots += b.length) },
  );
  await until(() => dots >= 5, 20000);
  vm.pause();
  await sleep(200); // exits already in flight are delivered
  const paused = dots;
  await sleep(500);
  assert.equal(dots, paused, "no guest progress while paused");
  vm.resume();
  await until(() => dots >= paused + 5, 20000);
  vm.stop();
  const r = await vm.wait();
  assert.equal(r.reason, "stopped");
  assert.equal(r.engine, "kvm");
  assert.ok((r.exits?.io ?? 0) >= dots, JSON.stringify(r.exits));
});
