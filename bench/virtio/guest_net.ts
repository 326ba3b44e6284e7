/**
 * bench/virtio guest_net: TCP throughput from the default i386 guest to a server on the host over
 * virtio-net and a TAP, on Vessel's soft engine (virtio-net over virtio-mmio, TAP made by Vessel)
 * and, in the same run, on `qemu-system-i386 -accel tcg` (virtio-net-pci on a TAP made here). The
 * guest pipes busybox dd into busybox nc; the host server counts the bytes and times them from
 * the first to the last byte (wall clock). Needs root (TAP devices).
 *   node dist/bench/virtio/guest_net.js [MB=16] [--only vessel,qemu]
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createServer, type Server } from "node:net";
import { fileURLToPath } from "node:url";
import { ensureDefaultGuest } from "../../src/guest/default_guest.js";
import { guestCommandParam } from "../../src/guest/init_script.js";
import { DEBUG_EXIT_PORT } from "../../src/memory/layout.js";

const argv = process.argv.slice(2);
const onlyAt = argv.indexOf("--only");
const only = new Set(onlyAt >= 0 ? argv[onlyAt + 1]!.split(",") : ["vessel", "qemu"]);
const MB = Number(argv.find((a, k) => /^\d+$/.test(a) && argv[k - 1] !== "--only") ?? 16);
const VESSEL = fileURLToPath(new URL("../../../bin/vessel.js", import.meta.url));
const SUBNET = `10.252.${10 + (process.pid % 200)}`;
const HOST_IP = `${SUBNET}.1`;
const GUEST_IP = `${SUBNET}.2`;

interface Received {
  bytes: number;
  seconds: number;
}

/** One connection's bytes, timed from its first byte to its end. */
function sink(): Promise<{ server: Server; port: number; done: Promise<Received> }> {
  return new Promise((ready) => {
    let resolveDone: (r: Received) => void = () => {};
    const done = new Promise<Received>((r) => {
      resolveDone = r;
    });
    const server = createServer((sock) => {
      let bytes = 0;
      let t0 = 0;
      sock.on("data", (b: Buffer) => {
        if (bytes === 0) t0 = performance.now();
        bytes += b.length;
      });
      sock.on("end", () => resolveDone({ bytes, seconds: (performance.now() - t0) / 1000 }));
    });
    server.listen(0, "0.0.0.0", () =>
      ready({ server, port: (server.address() as { port: number }).port, done }),
    );
  });
}

function script(port: number): string {
  return [
    `ip link set eth0 up && ip addr add ${GUEST_IP}/24 dev eth0`,
    `dd if=/dev/zero bs=64k count=${MB * 16} 2>/dev/null | nc ${HOST_IP} ${port}`,
    "echo SENT",
  ].join("\n");
}

async function measure(cmd: string, args: (port: number) => string[]): Promise<Received | string> {
  const s = await sink();
  try {
    const child = spawn(cmd, args(s.port), { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on("data", (b: Buffer) => {
      out += b.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 900_000);
    const exited = new Promise<void>((r) => child.on("exit", () => r()));
    const r = await Promise.race([s.done, exited.then(() => undefined)]);
    await exited;
    clearTimeout(timer);
    return r ?? `no connection: ${out.slice(-1500)}`;
  } finally {
    s.server.close();
  }
}

const guest = ensureDefaultGuest("i386", (m) => console.error(m));
const results: Record<string, Received> = {};
if (only.has("vessel")) {
  const tap = `vbn${process.pid % 100000}`;
  const r = await measure(process.execPath, (port) => [
    VESSEL,
    "vm",
    "run",
    "--engine",
    "soft",
    "--net",
    `tap,name=${tap},host-ip=${HOST_IP}/24`,
    "--",
    "sh",
    "-c",
    script(port),
  ]);
  if (typeof r === "string") console.log(`vessel: ${r}`);
  else results.vessel = r;
}
if (only.has("qemu")) {
  if (spawnSync("qemu-system-i386", ["--version"]).status !== 0)
    console.log("qemu: qemu-system-i386 is not installed");
  else {
    const tap = `vbq${process.pid % 100000}`;
    execFileSync("ip", ["tuntap", "add", "dev", tap, "mode", "tap"]);
    try {
      execFileSync("ip", ["addr", "add", `${HOST_IP}/24`, "dev", tap]);
      execFileSync("ip", ["link", "set", tap, "up"]);
      const r = await measure("qemu-system-i386", (port) => [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-device",
        `isa-debug-exit,iobase=0x${(DEBUG_EXIT_PORT + 1).toString(16)},iosize=0x1`,
        "-netdev",
        `tap,id=n0,ifname=${tap},script=no,downscript=no`,
        "-device",
        "virtio-net-pci,netdev=n0",
        "-kernel",
        guest.kernel,
        "-initrd",
        guest.initrd,
        "-append",
        `${guest.cmdline.replace("pci=off", "")} ${guestCommandParam(["sh", "-c", script(port)])}`,
      ]);
      if (typeof r === "string") console.log(`qemu: ${r}`);
      else results.qemu = r;
    } finally {
      spawnSync("ip", ["link", "del", tap]);
    }
  }
}
for (const [who, r] of Object.entries(results)) {
  console.log(
    `${who.padEnd(7)} guest->host TCP ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${r.seconds.toFixed(2)} s: ${(r.bytes / 2 ** 20 / r.seconds).toFixed(2)} MiB/s`,
  );
}
if (results.vessel !== undefined && results.qemu !== undefined) {
  const v = results.vessel.bytes / results.vessel.seconds;
  const q = results.qemu.bytes / results.qemu.seconds;
  console.log(`ratio   Vessel/QEMU ${(v / q).toFixed(2)}`);
}
