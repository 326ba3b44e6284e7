import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Manager } from "../../../src/container/manager/manager.js";
import { bridgeLeftovers, defaultBridge, removeBridge } from "../../../src/container/network/bridge.js";
import { bridgeSpec } from "../../../src/container/network/networks.js";
import { eventually, freePort, harness } from "../compose/cli_harness.js";
import { REPO } from "../fixtures.js";

/**
 * Container networking end to end, as root, through the `vessel` CLI in a private VESSEL_ROOT:
 * UDP and explicit TCP ports served to this host (userspace proxy) and to "another host" (a
 * network namespace of the test's own, with a veth to this host: its packets meet the DNAT
 * rules), the default bridge going with its last container, user networks with names, and bad
 * input. The default bridge is one of the test's own (VESSEL_BRIDGE, VESSEL_SUBNET_PREFIX), so
 * other tests' containers on vessel0 do not count as its containers. after() removes every
 * container, network, bridge, rule and namespace the test made, whichever test failed. The CLI
 * runs through the build and compose tests' harness (test/container/compose/cli_harness.ts).
 */

const tag = String(process.pid % 200);
// the CLI (the harness copies this environment) and this process (leftover checks, clean-up)
// read the same defaults: a default bridge and an address pool of the test's own
Object.assign(process.env, {
  VESSEL_BRIDGE: `vsle2e${tag}`,
  VESSEL_SUBNET_PREFIX: `10.199.${tag}`,
  VESSEL_NETWORK_POOL: "10.198.0.0/16",
});
const h = harness("net-e2e");
const { root, vessel, ok } = h;
const GATEWAY = `10.199.${tag}.1`;
/** "Another host": a namespace at PEER_IP, reaching this host at HOST_IP over a veth pair. */
const PEER_NS = `vsle2e-peer${tag}`;
const HOST_VETH = `vsle2eh${tag}`;
const HOST_IP = `10.197.${tag}.1`;
const PEER_IP = `10.197.${tag}.2`;

let baseReady: string | undefined;
/** Directory holding the static udp-echo program, bound into containers at /opt/echo. */
const echoDir = join(root, "echo");
let echoReady: string | undefined;

/** A small client run by node, on this host or inside PEER_NS (`ip netns exec`). */
const CLIENT = `
const [kind, host, port, msg] = process.argv.slice(1);
const done = (out) => { process.stdout.write(out); process.exit(0); };
setTimeout(() => { process.stderr.write("no answer in 2 s"); process.exit(1); }, 2000);
if (kind === "udp") {
  const s = require("node:dgram").createSocket("udp4");
  s.on("message", (b) => done(b.toString()));
  s.send(msg, Number(port), host);
} else {
  require("node:http").get({ host, port: Number(port), path: "/" }, (res) => {
    let body = "";
    res.on("data", (b) => (body += b));
    res.on("end", () => done(body));
  }).on("error", (e) => { process.stderr.write(String(e)); process.exit(1); });
}
`;

function client(where: "host" | "peer", kind: "udp" | "tcp", host: string, port: number, msg = ""): string {
  const argv = [process.execPath, "-e", CLIENT, kind, host, String(port), msg];
  const r =
    where === "host"
      ? spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" })
      : spawnSync("ip", ["netns", "exec", PEER_NS, ...argv], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${kind} ${host}:${port} from ${where}: ${r.stderr}`);
  return r.stdout;
}

/** Retries `fn` for up to 10 s (a container's server takes a moment to listen). */
function retry<T>(fn: () => T | Promise<T>): Promise<T> {
  return eventually(fn, 10_000);
}

function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

function makePeer(): void {
  removePeer();
  const run = (args: string[]) => {
    const r = spawnSync("ip", args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr}`);
  };
  run(["netns", "add", PEER_NS]);
  run(["link", "add", HOST_VETH, "type", "veth", "peer", "name", "eth0", "netns", PEER_NS]);
  run(["addr", "add", `${HOST_IP}/30`, "dev", HOST_VETH]);
  run(["link", "set", HOST_VETH, "up"]);
  run(["-n", PEER_NS, "addr", "add", `${PEER_IP}/30`, "dev", "eth0"]);
  run(["-n", PEER_NS, "link", "set", "eth0", "up"]);
  run(["-n", PEER_NS, "link", "set", "lo", "up"]);
}

function removePeer(): void {
  if (linkExists(HOST_VETH)) spawnSync("ip", ["link", "del", HOST_VETH]);
  if (existsSync(`/run/netns/${PEER_NS}`)) spawnSync("ip", ["netns", "del", PEER_NS]);
}

before(async () => {
  baseReady = await h.prepareBase();
  if (baseReady) return;
  mkdirSync(echoDir, { recursive: true });
  const cc = spawnSync(
    "cc",
    ["-static", "-O2", "-o", join(echoDir, "udp-echo"), join(REPO, "test/container/network/udp_echo.c")],
    { encoding: "utf8" },
  );
  echoReady =
    cc.status === 0
      ? undefined
      : `cannot build the static udp-echo program (needs cc and a static libc, libc6-dev): ${cc.error?.message ?? cc.stderr.trim()}`;
  removeBridge(defaultBridge()); // left by a run of this test that was killed
  makePeer();
});

after(async () => {
  if (!h.skipReason) {
    const m = new Manager(root);
    for (const v of m.list(true)) await m.remove(v.config.id, true).catch(() => undefined);
    // a network whose rm failed still has its bridge and rules: take those away by hand
    for (const n of m.networks.list()) {
      try {
        m.networks.remove(n.id);
      } catch {
        removeBridge(bridgeSpec(n));
      }
    }
    removeBridge(defaultBridge());
    removePeer();
  }
  await h.cleanup();
});

function need(t: { skip(reason: string): void }, ...more: (string | undefined)[]): boolean {
  const why = h.skipReason ?? baseReady ?? more.find((m) => m !== undefined);
  if (why) t.skip(why);
  return why === undefined;
}

test("-p HOST:CTR/udp: a UDP echo answers this host through the proxy and another host through DNAT", async (t) => {
  if (!need(t, echoReady)) return;
  const [pAll, pLocal] = [await freePort(), await freePort()];
  const id = (
    await ok([
      "container",
      "run",
      "-d",
      "--name",
      "udp1",
      "-p",
      `${pAll}:53/udp`,
      "-p",
      `127.0.0.1:${pLocal}:53/udp`,
      "-v",
      `${echoDir}:/opt/echo:ro`,
      "busybox",
      "/opt/echo/udp-echo",
      "53",
    ])
  ).trim();
  await retry(async () => assert.match(await ok(["container", "logs", "udp1"]), /listening/));
  // from this host: the proxy forwards from the bridge's side, so the container sees the gateway
  assert.equal(await retry(() => client("host", "udp", "127.0.0.1", pAll, "one")), `from ${GATEWAY} one`);
  assert.equal(client("host", "udp", "127.0.0.1", pLocal, "two"), `from ${GATEWAY} two`);
  // a second datagram of the same client takes the same flow
  assert.equal(client("host", "udp", "127.0.0.1", pAll, "three"), `from ${GATEWAY} three`);
  // from another host: DNAT delivers it with the sender's own address
  assert.equal(await retry(() => client("peer", "udp", HOST_IP, pAll, "four")), `from ${PEER_IP} four`);
  // the 127.0.0.1 binding is not published to other hosts
  assert.throws(() => client("peer", "udp", HOST_IP, pLocal, "five"), /no answer/);
  const ps = await ok(["container", "ps"]);
  assert.match(ps, new RegExp(`0\\.0\\.0\\.0:${pAll}->53/udp, 127\\.0\\.0\\.1:${pLocal}->53/udp.*udp1`));
  const bindings = JSON.parse(await ok(["container", "inspect", "udp1"]))[0].HostConfig.PortBindings;
  assert.deepEqual(Object.keys(bindings), ["53/udp"]);
  const m = new Manager(root);
  const monitorPid = m.view(id).state.monitorPid;
  await ok(["container", "rm", "-f", "udp1"]);
  assert.deepEqual(m.leftovers(id, monitorPid), []);
  assert.throws(() => client("host", "udp", "127.0.0.1", pAll, "six"), /no answer/);
});

test("-p HOST:CTR/tcp explicit; the default bridge and its NAT rule go with its last container", async (t) => {
  if (!need(t)) return;
  const def = defaultBridge();
  assert.deepEqual(bridgeLeftovers(def), [], "no container yet: no bridge");
  const p = await freePort();
  const web = [
    "sh",
    "-c",
    "mkdir -p /www && echo served over tcp > /www/index.html && exec httpd -f -p 80 -h /www",
  ];
  await ok(["container", "run", "-d", "--name", "tcp1", "-p", `${p}:80/tcp`, "busybox", ...web]);
  await ok(["container", "run", "-d", "--name", "idle1", "busybox", "sleep", "300"]);
  assert.equal(await retry(() => client("host", "tcp", "127.0.0.1", p)), "served over tcp\n");
  assert.equal(await retry(() => client("peer", "tcp", HOST_IP, p)), "served over tcp\n");
  assert.match(await ok(["container", "ps"]), new RegExp(`0\\.0\\.0\\.0:${p}->80/tcp.*tcp1`));
  const up = bridgeLeftovers(def);
  assert.ok(up.includes(`bridge ${def.bridge}`), up.join("\n"));
  assert.ok(
    up.some((l) => l.includes("MASQUERADE")),
    up.join("\n"),
  );
  await ok(["container", "rm", "-f", "tcp1"]);
  assert.ok(linkExists(def.bridge), "idle1 is still on the bridge");
  await ok(["container", "stop", "-t", "1", "idle1"]);
  assert.deepEqual(bridgeLeftovers(def), [], "the last container stopped: bridge and rules are gone");
  // and come back with the next container
  const route = await ok(["container", "run", "--rm", "busybox", "ip", "route"]);
  assert.match(route, new RegExp(`default via ${GATEWAY.replace(/\./g, "\\.")}`));
  assert.deepEqual(bridgeLeftovers(def), []);
  await ok(["container", "rm", "idle1"]);
});

test("a user network: own bridge and subnet, peers by name and alias, hosts kept in sync, rm refused while used", async (t) => {
  if (!need(t)) return;
  const id = (await ok(["network", "create", "e2enet"])).trim();
  assert.match(id, /^[0-9a-f]{64}$/);
  const m = new Manager(root);
  const net = m.networks.get("e2enet");
  assert.equal(net.subnet.endsWith("/24") && net.subnet.startsWith("10.198."), true, net.subnet);
  assert.ok(linkExists(net.bridge), "the bridge is made at create");
  assert.equal(
    bridgeLeftovers(bridgeSpec(net)).length,
    6,
    "bridge, MASQUERADE, two FORWARD and two isolation rules",
  );
  const ls = await ok(["network", "ls"]);
  assert.match(
    ls,
    new RegExp(`${id.slice(0, 12)}\\s+e2enet\\s+bridge\\s+${net.subnet.replace(/\./g, "\\.")}`),
  );
  assert.match(ls, /-\s+bridge\s+bridge/);

  const web = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"];
  const published = await freePort();
  await ok(["container", "run", "-d", "--name", "alpha", "--network", "e2enet", "busybox", "sleep", "300"]);
  await ok([
    "container",
    "run",
    "-d",
    "--name",
    "beta",
    "--hostname",
    "beta-host",
    "--network",
    "e2enet",
    "--network-alias",
    "bee",
    "-p",
    `${published}:80`,
    "busybox",
    ...web,
  ]);
  // a port published from a user network: DNAT towards its bridge, the proxy for this host
  assert.equal(await retry(() => client("host", "tcp", "127.0.0.1", published)), "beta-host\n");
  assert.equal(await retry(() => client("peer", "tcp", HOST_IP, published)), "beta-host\n");
  const inspect = JSON.parse(await ok(["container", "inspect", "beta"]))[0].NetworkSettings;
  assert.equal(inspect.Gateway, net.gateway);
  assert.deepEqual(inspect.Networks.e2enet.Aliases, ["bee"]);
  // alpha was there first: it learns beta when beta comes
  for (const name of ["beta", "bee"]) {
    const page = await retry(() => ok(["container", "exec", "alpha", "wget", "-qO-", `http://${name}/`]));
    assert.equal(page, "beta-host\n", name);
  }
  const betaHosts = await ok(["container", "exec", "beta", "cat", "/etc/hosts"]);
  assert.match(
    betaHosts,
    new RegExp(`^${inspect.IPAddress.replace(/\./g, "\\.")}\\tbeta-host beta [0-9a-f]{12} bee$`, "m"),
  );
  assert.match(betaHosts, /\talpha [0-9a-f]{12}$/m);

  const inUse = await vessel(["network", "rm", "e2enet"]);
  assert.equal(inUse.code, 1);
  assert.match(
    inUse.stderr,
    /network "e2enet" has containers on it: (alpha \(running\), beta \(running\)|beta \(running\), alpha \(running\)); remove them first/,
  );
  assert.ok(linkExists(net.bridge));

  // beta goes: alpha's hosts file no longer names it
  await ok(["container", "rm", "-f", "beta"]);
  const alphaHosts = await ok(["container", "exec", "alpha", "cat", "/etc/hosts"]);
  assert.doesNotMatch(alphaHosts, /beta|bee/);

  await ok(["container", "rm", "-f", "alpha"]);
  assert.equal((await ok(["network", "rm", "e2enet"])).trim(), "e2enet");
  assert.deepEqual(bridgeLeftovers(bridgeSpec(net)), [], "bridge and rules removed with the network");
  assert.doesNotMatch(await ok(["network", "ls"]), /e2enet/);
});

/**
 * The bridges and iptables rules in this test's address ranges (other tests and helpers may make
 * and remove theirs meanwhile): bridges with an address in them, and every rule of a network
 * whose MASQUERADE rule is for one of them (found by the network's comment tag).
 */
function ours(): { bridges: string[]; rules: string[] } {
  const mine = (text: string) => text.includes("10.198.") || text.includes(`10.199.${tag}.`);
  const bridges = spawnSync("ip", ["-4", "-o", "addr", "show", "type", "bridge"], { encoding: "utf8" })
    .stdout.split("\n")
    .filter(mine)
    .map((l) => l.split(/\s+/)[1]!)
    .sort();
  const lines = spawnSync("iptables-save", [], { encoding: "utf8" }).stdout.split("\n");
  const tags = new Set(
    lines
      .filter((l) => l.includes("MASQUERADE") && mine(l))
      .map((l) => /--comment (\S+)/.exec(l)?.[1])
      .filter((t) => t !== undefined && t !== "vessel"),
  );
  const rules = lines.filter((l) => mine(l) || [...tags].some((t) => l.includes(`--comment ${t} `))).sort();
  return { bridges, rules };
}

test("network prune keeps networks with containers; create and run refuse bad input and leave nothing", async (t) => {
  if (!need(t)) return;
  const m = new Manager(root);
  const before = ours();
  const cases: [string[], number, RegExp][] = [
    [
      ["network", "create", "--subnet", "10.198.250.7/24", "badnet"],
      2,
      /invalid --subnet "10\.198\.250\.7\/24": host bits are set/,
    ],
    [["network", "create", "--subnet", "nonsense", "badnet"], 2, /invalid --subnet "nonsense"/],
    [
      ["network", "create", "--subnet", "10.198.250.0/24", "--gateway", "10.1.1.1", "badnet"],
      2,
      /invalid --gateway "10\.1\.1\.1"/,
    ],
    [
      ["network", "create", "--subnet", `10.199.${tag}.0/25`, "badnet"],
      1,
      /overlaps (the default bridge network|a route of this host)/,
    ],
    [["network", "create", "--subnet", `10.197.${tag}.0/24`, "badnet"], 1, /overlaps a route of this host/],
    [["network", "create", "bridge"], 2, /"bridge" is a built-in network name/],
    [["network", "create", "--driver", "overlay", "badnet"], 2, /only the bridge driver/],
    [["network", "rm", "host"], 2, /"host" is a built-in network and cannot be removed/],
    [["network", "rm", "nosuchnet"], 1, /no such network: "nosuchnet"/],
    [
      ["container", "run", "--rm", "--network", "nosuchnet", "busybox", "true"],
      2,
      /invalid --network "nosuchnet": no such network; create it with `vessel network create nosuchnet`/,
    ],
    [
      ["container", "run", "--rm", "--network-alias", "x", "busybox", "true"],
      2,
      /--network-alias needs a user network/,
    ],
    [["container", "run", "--rm", "-p", "53:53/sctp", "busybox", "true"], 2, /unknown protocol "sctp"/],
  ];
  for (const [args, code, why] of cases) {
    const r = await vessel(args);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, why, args.join(" "));
  }
  await ok(["network", "create", "--subnet", "10.198.240.0/24", "dup"]);
  const dup = await vessel(["network", "create", "dup"]);
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /a network named "dup" exists already/);
  assert.deepEqual(
    m.networks.list().map((n) => n.name),
    ["dup"],
  );
  await ok(["network", "rm", "dup"]);
  assert.deepEqual(ours(), before, "no bridge or rule left by the refused creates");

  // prune: a network with a (created, never started) container stays; an unused one goes
  await ok(["network", "create", "used"]);
  await ok(["network", "create", "unused"]);
  await ok(["container", "create", "--name", "holder", "--network", "used", "busybox", "true"]);
  assert.equal((await ok(["network", "prune"])).trim(), "unused");
  assert.deepEqual(
    m.networks.list().map((n) => n.name),
    ["used"],
  );
  // the record holds after a start and exit, and the container ran on the network
  await ok(["container", "start", "holder"]);
  await ok(["container", "rm", "-f", "holder"]);
  await ok(["network", "prune"]);
  assert.deepEqual(m.networks.list(), []);
});

/** A web server in PEER_NS that answers with the address the request came from. */
function peerServer(p: number): { stop(): void } {
  const code = `require("node:http").createServer((q, r) => r.end(q.socket.remoteAddress)).listen(${p}, "${PEER_IP}")`;
  const child = spawn("ip", ["netns", "exec", PEER_NS, process.execPath, "-e", code], { stdio: "ignore" });
  return { stop: () => child.kill("SIGKILL") };
}

test("networks are isolated from each other; their containers reach other hosts through NAT", async (t) => {
  if (!need(t)) return;
  await ok(["network", "create", "iso-a"]);
  await ok(["network", "create", "iso-b"]);
  const web = [
    "sh",
    "-c",
    "mkdir -p /www && echo other network > /www/index.html && exec httpd -f -p 80 -h /www",
  ];
  await ok(["container", "run", "-d", "--name", "gamma", "--network", "iso-b", "busybox", ...web]);
  await ok(["container", "run", "-d", "--name", "delta", "--network", "iso-b", "busybox", "sleep", "300"]);
  const gammaIp = JSON.parse(await ok(["container", "inspect", "gamma"]))[0].NetworkSettings
    .IPAddress as string;
  // on its own network it answers (by address and by name)
  assert.equal(
    await retry(() => ok(["container", "exec", "delta", "wget", "-qO-", `http://${gammaIp}/`])),
    "other network\n",
  );
  // `timeout` is not pid 1 here: pid 1 ignores a SIGTERM it has no handler for
  const fetchFrom = (network: string) =>
    vessel([
      "container",
      "run",
      "--rm",
      "--network",
      network,
      "busybox",
      "sh",
      "-c",
      `timeout 3 wget -qO- http://${gammaIp}/; exit $?`,
    ]);
  for (const network of ["iso-a", "bridge"]) {
    const r = await fetchFrom(network);
    assert.notEqual(r.code, 0, `reached a container of iso-b from ${network}: ${r.stdout}`);
  }
  // out to another host: the source is this host's address there (MASQUERADE)
  const p = await freePort();
  const server = peerServer(p);
  try {
    for (const network of ["iso-a", "bridge"]) {
      const seen = await retry(() =>
        ok([
          "container",
          "run",
          "--rm",
          "--network",
          network,
          "busybox",
          "wget",
          "-qO-",
          `http://${PEER_IP}:${p}/`,
        ]),
      );
      assert.equal(seen, HOST_IP, network);
    }
  } finally {
    server.stop();
  }
  await ok(["container", "rm", "-f", "gamma", "delta"]);
  const specs = ["iso-a", "iso-b"].map((n) => bridgeSpec(new Manager(root).networks.get(n)));
  await ok(["network", "rm", "iso-a", "iso-b"]);
  for (const spec of specs) assert.deepEqual(bridgeLeftovers(spec), [], spec.bridge);
});
