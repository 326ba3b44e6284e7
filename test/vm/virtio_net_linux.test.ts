/**
 * virtio-net end to end on the soft engine: `vessel vm run --net tap,host-ip=...` boots the default
 * i386 guest with a NIC on a TAP that Vessel creates and addresses; in one boot the guest fetches a
 * page from an HTTP server on the host (busybox wget), then serves a page with busybox httpd that
 * this test fetches from the host, then asks the host whether it may exit (so Vessel stops cleanly
 * and removes its TAP). Skips without root or /dev/net/tun, or when the i386 guest is not built.
 * (No `wget -T`: Debian 12's busybox-static wget segfaults with it, on QEMU TCG as well.)
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer, get, type Server } from "node:http";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { guestPaths } from "../../src/guest/default_guest.js";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const VESSEL = join(ROOT, "bin/vessel.js");

function fetchText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: 30_000 }, (res) => {
      let body = "";
      res.on("data", (b: Buffer) => {
        body += b.toString();
      });
      res.on("end", () => resolve(body));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error(`timeout fetching ${url}`)));
  });
}

test("virtio-net on the soft engine: guest fetches from a host server, host fetches from guest httpd", {
  timeout: 600_000,
}, async (t) => {
  const guest = guestPaths("i386");
  if (!existsSync(guest.kernel) || !existsSync(guest.initrd)) {
    t.skip("the default i386 guest is not built (node bin/vessel.js guest build --arch i386)");
    return;
  }
  if (process.getuid?.() !== 0 || !existsSync("/dev/net/tun")) {
    t.skip("creating a TAP needs root and /dev/net/tun");
    return;
  }
  // A subnet and TAP name of our own, so parallel runs and other tests do not collide.
  const n = 10 + (process.pid % 200);
  const hostIp = `10.251.${n}.1`;
  const guestIp = `10.251.${n}.2`;
  const tap = `vtst${process.pid % 100000}`;
  let done = false;
  const server: Server = createServer((req, res) => {
    if (req.url === "/hello") res.end("hello-from-host");
    else if (req.url === "/done") res.end(done ? "yes" : "no");
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
  const port = (server.address() as { port: number }).port;
  const script = [
    "ip link set eth0 up && ip addr add " + guestIp + "/24 dev eth0",
    `echo GET=$(wget -q -O - http://${hostIp}:${port}/hello)`,
    "mkdir -p /www && echo served-by-guest > /www/index.html && httpd -p 8080 -h /www && echo HTTPD=up",
    `i=0; while [ $i -lt 120 ] && [ "$(wget -q -O - http://${hostIp}:${port}/done)" != yes ]; do sleep 1; i=$((i+1)); done`,
    "echo BYE",
  ].join("\n");
  let child: ChildProcess | undefined;
  try {
    child = spawn(
      process.execPath,
      [
        VESSEL,
        "vm",
        "run",
        "--engine",
        "soft",
        "--net",
        `tap,name=${tap},host-ip=${hostIp}/24`,
        "--",
        "sh",
        "-c",
        script,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stderr?.on("data", (b: Buffer) => {
      out += b.toString();
    });
    const exited = new Promise<number | null>((resolve) => child?.on("exit", (code) => resolve(code)));
    let fetched: Promise<string> | undefined;
    child.stdout?.on("data", (b: Buffer) => {
      out += b.toString();
      if (fetched === undefined && /HTTPD=up/.test(out)) {
        fetched = fetchText(`http://${guestIp}:8080/index.html`).finally(() => {
          done = true;
        });
        fetched.catch(() => undefined);
      }
    });
    const code = await exited;
    const line = (key: string) => new RegExp(`^${key}=(.*)$`, "m").exec(out)?.[1]?.trim();
    assert.equal(line("GET"), "hello-from-host", out.slice(-3000));
    assert.ok(fetched !== undefined, `the guest's httpd did not start:\n${out.slice(-3000)}`);
    assert.equal((await fetched).trim(), "served-by-guest");
    assert.equal(code, 0, out.slice(-3000));
    assert.match(out, /^BYE/m);
  } finally {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    server.close();
  }
});
