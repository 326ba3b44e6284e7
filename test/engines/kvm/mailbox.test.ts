import assert from "node:assert/strict";
import { test } from "node:test";
import { MailboxClient, newMailbox, POST_PORT, serveMailboxes } from "../../../src/engines/kvm/mailbox.js";
import { VcpuLink } from "../../../src/engines/kvm/vcpu_link.js";
import { RecordingIo } from "./helpers.js";

test("mailbox: a posted port write is served by the owner's IoHandler and answered", async () => {
  const box = newMailbox();
  const io = new RecordingIo();
  io.answers.set(0x3fd, 0x60);
  // The client blocks in Atomics.wait, so it runs in a worker; the owner serves from here.
  const { Worker } = await import("node:worker_threads");
  const code = `
    const { workerData, parentPort } = require("node:worker_threads");
    import(workerData.mailbox).then(async ({ MailboxClient }) => {
      const { VcpuLink } = await import(workerData.link);
      const c = new MailboxClient(new Int32Array(workerData.box), new VcpuLink(workerData.owner), new VcpuLink());
      c.pioOut(0x3f8, 1, 0x41);
      const lsr = c.pioIn(0x3fd, 1);
      c.pioOut(${POST_PORT}, 1, 0);
      parentPort.postMessage({ lsr, inline: c.inline });
    });`;
  const w = new Worker(code, {
    eval: true,
    workerData: {
      box: box.buffer,
      owner: new VcpuLink().buffer,
      mailbox: new URL("../../../src/engines/kvm/mailbox.js", import.meta.url).href,
      link: new URL("../../../src/engines/kvm/vcpu_link.js", import.meta.url).href,
    },
  });
  const result = new Promise<{ lsr: number; inline: number }>((r) => w.once("message", r));
  let got: { lsr: number; inline: number } | undefined;
  void result.then((m) => (got = m));
  const end = Date.now() + 10000;
  while (got === undefined && Date.now() < end) {
    serveMailboxes([box], io);
    await new Promise((r) => setTimeout(r, 1));
  }
  await w.terminate();
  assert.deepEqual(got, { lsr: 0x60, inline: 1 });
  assert.deepEqual(io.log, ["out 3f8/1=41", "in 3fd/1"]);
  assert.equal(typeof MailboxClient, "function");
});
