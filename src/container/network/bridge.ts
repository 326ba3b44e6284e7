import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { withLockFile } from "../lock_file.js";
import { ManagerError } from "../manager/errors.js";
import { formatSubnet, parseIpv4, type Subnet } from "./subnet.js";

/**
 * Container networking, docker's "bridge" driver done with iproute2 and iptables:
 * - per network one Linux bridge holding the gateway address of its subnet: `vessel0` for the
 *   default network ("bridge"), `vsl-<id>` for each user network (networks.ts);
 * - per container a network namespace (`ip netns add`, so it outlives any process and can be
 *   joined by path from the OCI config) and a veth pair: `vv<id>` on the bridge, `eth0` inside;
 * - NAT to the outside by one MASQUERADE rule per subnet, and FORWARD accepts for the bridge;
 * - published ports by a DNAT rule per port and protocol for traffic from other hosts (tagged
 *   with the container id so teardown finds it) and a userspace proxy in the monitor for traffic
 *   from the host itself (port_proxy.ts: DNAT in PREROUTING does not see locally generated
 *   packets to 127.0.0.1).
 * The default bridge and its rules exist while a container is on it: the last one to go takes
 * them away (container_network.ts); a user network's stay until `network rm`. Everything that
 * creates or removes a bridge, or puts a veth on one, holds the host's network lock, which is
 * one for every Vessel root of the host as the bridges and subnets are.
 */

/** What a bridge network is on the host. */
export interface BridgeSpec {
  /** The Linux interface name (at most 15 bytes, IFNAMSIZ - 1). */
  bridge: string;
  subnet: Subnet;
  gateway: string;
  /** The comment on the bridge's own iptables rules, so they can be found and removed. */
  tag: string;
}

/**
 * The default network (`--network bridge`): `vessel0` with 10.121.0.0/24, or as VESSEL_BRIDGE and
 * VESSEL_SUBNET_PREFIX (three bytes) say, which tests use for a bridge of their own.
 */
export function defaultBridge(): BridgeSpec {
  const prefix = process.env.VESSEL_SUBNET_PREFIX ?? "10.121.0";
  const base = parseIpv4(`${prefix}.0`);
  if (base === undefined)
    throw new ManagerError("NETWORK", `VESSEL_SUBNET_PREFIX "${prefix}" is not three bytes such as 10.121.0`);
  return {
    bridge: process.env.VESSEL_BRIDGE ?? "vessel0",
    subnet: { base, prefix: 24 },
    gateway: `${prefix}.1`,
    tag: "vessel",
  };
}

function sh(
  cmd: string,
  args: string[],
  what: string,
  allowFail = false,
): { ok: boolean; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  const ok = !r.error && r.status === 0;
  if (!ok && !allowFail) {
    throw new ManagerError(
      "NETWORK",
      `${what}: ${cmd} ${args.join(" ")} failed: ${r.error?.message ?? r.stderr.trim()}`,
      { cmd, args },
    );
  }
  return { ok, out: r.stdout ?? "", err: r.stderr ?? "" };
}

const LOCK = process.env.VESSEL_NETWORK_LOCK ?? "/run/vessel/network.lock";

/** Runs `fn` holding the host's network lock (bridges, veths, addresses, hosts files). */
export function withNetworkLock<T>(fn: () => T): T {
  mkdirSync(join(LOCK, ".."), { recursive: true });
  return withLockFile(
    LOCK,
    { staleMs: 30_000, timeoutMs: 40_000, pollMs: 5 },
    () =>
      new ManagerError(
        "NETWORK",
        `the network lock ${LOCK} has been held for 40 s: another vessel command is setting up or removing a network; try again when it ends (or remove the file if no vessel command runs)`,
      ),
    fn,
  );
}

export function netnsName(id: string): string {
  return `vessel-${id.slice(0, 12)}`;
}

export function netnsPath(id: string): string {
  return `/run/netns/${netnsName(id)}`;
}

export function hostVeth(id: string): string {
  return `vv${id.slice(0, 12)}`;
}

export function interfaceExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

/** The interfaces on a bridge (its ports, /sys/class/net/<bridge>/brif). */
export function bridgePorts(bridge: string): string[] {
  try {
    return readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    return [];
  }
}

function iptablesEnsure(table: string, chain: string, rule: string[]): void {
  if (!sh("iptables", ["-w", "-t", table, "-C", chain, ...rule], "iptables check", true).ok) {
    sh("iptables", ["-w", "-t", table, "-A", chain, ...rule], "iptables append");
  }
}

function iptablesDelete(table: string, chain: string, rule: string[]): void {
  // a rule added twice (by hand, or by an old version) is deleted twice
  for (let i = 0; i < 8; i++) {
    if (!sh("iptables", ["-w", "-t", table, "-C", chain, ...rule], "iptables check", true).ok) return;
    sh("iptables", ["-w", "-t", table, "-D", chain, ...rule], "iptables delete", true);
  }
}

/** The bridge's own rules: NAT out of the subnet, and forwarding to and from the bridge. */
function bridgeRules(spec: BridgeSpec): [string, string, string[]][] {
  const comment = ["-m", "comment", "--comment", spec.tag];
  return [
    [
      "nat",
      "POSTROUTING",
      ["-s", formatSubnet(spec.subnet), "!", "-o", spec.bridge, "-j", "MASQUERADE", ...comment],
    ],
    ["filter", "FORWARD", ["-i", spec.bridge, "-j", "ACCEPT", ...comment]],
    ["filter", "FORWARD", ["-o", spec.bridge, "-j", "ACCEPT", ...comment]],
  ];
}

/**
 * Isolation between networks, as docker's DOCKER-ISOLATION-STAGE-1/2 chains do it: FORWARD
 * first jumps to stage 1, where a packet that comes from one of our bridges and leaves by another
 * interface goes to stage 2, where it is dropped if that interface is another of our bridges.
 * So containers of one network do not reach those of another, while traffic to the outside (and
 * the DNAT'd traffic coming in) goes on to the ACCEPT rules above. (Two stages because one rule
 * cannot say "-o not this bridge" and "-o one of ours" at once.)
 */
const ISOLATION_1 = "VESSEL-ISOLATION-1";
const ISOLATION_2 = "VESSEL-ISOLATION-2";

function isolationRules(spec: BridgeSpec): [string, string, string[]][] {
  const comment = ["-m", "comment", "--comment", spec.tag];
  return [
    ["filter", ISOLATION_1, ["-i", spec.bridge, "!", "-o", spec.bridge, "-j", ISOLATION_2, ...comment]],
    ["filter", ISOLATION_2, ["-o", spec.bridge, "-j", "DROP", ...comment]],
  ];
}

function ensureIsolationChains(): void {
  for (const chain of [ISOLATION_1, ISOLATION_2])
    if (!sh("iptables", ["-w", "-t", "filter", "-S", chain], "iptables -S", true).ok)
      sh("iptables", ["-w", "-t", "filter", "-N", chain], "iptables new chain");
  const jump = ["-j", ISOLATION_1];
  if (!sh("iptables", ["-w", "-t", "filter", "-C", "FORWARD", ...jump], "iptables check", true).ok)
    sh("iptables", ["-w", "-t", "filter", "-I", "FORWARD", "1", ...jump], "iptables insert");
}

/** Drops the isolation chains and FORWARD's jump once no bridge has a rule in them. */
function removeIsolationChainsIfEmpty(): void {
  const rules = (chain: string) =>
    sh("iptables", ["-w", "-t", "filter", "-S", chain], "iptables -S", true)
      .out.split("\n")
      .filter((l) => l.startsWith("-A "));
  if (rules(ISOLATION_1).length > 0 || rules(ISOLATION_2).length > 0) return;
  iptablesDelete("filter", "FORWARD", ["-j", ISOLATION_1]);
  for (const chain of [ISOLATION_1, ISOLATION_2])
    sh("iptables", ["-w", "-t", "filter", "-X", chain], "iptables delete chain", true);
}

function markerPath(bridge: string): string {
  return join(LOCK, "..", "bridges", bridge);
}

function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

/**
 * Creates the bridge, its address, forwarding and its rules where missing. Call with the network
 * lock held. A marker holding subnet and boot id skips the checks when this boot already did them
 * (a reboot loses bridge and rules; removeBridge drops the marker).
 */
export function ensureBridge(spec: BridgeSpec): void {
  const marker = markerPath(spec.bridge);
  const want = `${formatSubnet(spec.subnet)} ${spec.gateway} ${bootId()}`;
  try {
    if (readFileSync(marker, "utf8").trim() === want && interfaceExists(spec.bridge)) return;
  } catch {
    // no marker yet
  }
  setupBridge(spec);
  try {
    mkdirSync(join(marker, ".."), { recursive: true });
    writeFileSync(marker, `${want}\n`);
  } catch {
    // not writable: check every time
  }
}

function setupBridge(spec: BridgeSpec): void {
  const { bridge } = spec;
  if (!interfaceExists(bridge)) {
    const add = sh("ip", ["link", "add", bridge, "type", "bridge"], "create bridge", true);
    if (!add.ok && !add.err.includes("File exists"))
      throw new ManagerError("NETWORK", `cannot create bridge ${bridge}: ${add.err.trim()}`, { bridge });
  }
  const cidr = `${spec.gateway}/${spec.subnet.prefix}`;
  const addr = sh("ip", ["-4", "addr", "show", "dev", bridge], "ip addr", true);
  if (!addr.out.includes(` ${cidr} `)) sh("ip", ["addr", "add", cidr, "dev", bridge], "bridge address");
  sh("ip", ["link", "set", bridge, "up"], "bridge up");
  try {
    if (readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim() !== "1")
      writeFileSync("/proc/sys/net/ipv4/ip_forward", "1");
  } catch (err) {
    throw new ManagerError("NETWORK", `cannot enable IPv4 forwarding: ${(err as Error).message}`);
  }
  for (const [table, chain, rule] of bridgeRules(spec)) iptablesEnsure(table, chain, rule);
  ensureIsolationChains();
  for (const [table, chain, rule] of isolationRules(spec)) iptablesEnsure(table, chain, rule);
}

/** Removes the bridge and its rules (the veths on it go with it). Idempotent; lock held. */
export function removeBridge(spec: BridgeSpec): void {
  for (const [table, chain, rule] of bridgeRules(spec)) iptablesDelete(table, chain, rule);
  for (const [table, chain, rule] of isolationRules(spec))
    if (sh("iptables", ["-w", "-t", table, "-S", chain], "iptables -S", true).ok)
      iptablesDelete(table, chain, rule);
  removeIsolationChainsIfEmpty();
  if (interfaceExists(spec.bridge)) sh("ip", ["link", "del", spec.bridge], "delete bridge");
  rmSync(markerPath(spec.bridge), { force: true });
}

/** What of a bridge network is on the host: the link and its rules (for leak checks). */
export function bridgeLeftovers(spec: BridgeSpec): string[] {
  const out: string[] = [];
  if (interfaceExists(spec.bridge)) out.push(`bridge ${spec.bridge}`);
  for (const [table, chain, rule] of [...bridgeRules(spec), ...isolationRules(spec)])
    if (sh("iptables", ["-w", "-t", table, "-C", chain, ...rule], "iptables check", true).ok)
      out.push(`iptables -t ${table} ${chain} ${rule.join(" ")}`);
  return out;
}

/** The IPv4 subnets the host already routes or holds addresses in (a new network must avoid them). */
export function hostSubnets(): Subnet[] {
  const out: Subnet[] = [];
  const routes = sh("ip", ["-4", "route", "show", "table", "all"], "ip route", true).out;
  for (const line of routes.split("\n")) {
    const first = line.trim().split(/\s+/)[0] ?? "";
    const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?$/.exec(first);
    if (!m || first.startsWith("127.")) continue;
    const prefix = m[2] === undefined ? 32 : Number(m[2]);
    const base = parseIpv4(m[1]!);
    if (base !== undefined && prefix > 0) out.push({ base, prefix });
  }
  return out;
}

/** Makes the container's namespace: only loopback for `none`, a veth on the bridge otherwise. */
export function setupNetns(id: string, attach?: { spec: BridgeSpec; ip: string }): string {
  const ns = netnsName(id);
  if (!existsSync(netnsPath(id))) sh("ip", ["netns", "add", ns], "create network namespace");
  if (attach === undefined) {
    sh("ip", ["-n", ns, "link", "set", "lo", "up"], "loopback up");
    return netnsPath(id);
  }
  const { spec, ip } = attach;
  const veth = hostVeth(id);
  // two `ip -batch` runs instead of one process per step: host side, then inside the namespace
  const host = [
    ...(interfaceExists(veth) ? [] : [`link add ${veth} type veth peer name eth0 netns ${ns}`]),
    `link set ${veth} master ${spec.bridge} up`,
  ];
  batch([], host, `attach a veth pair to the bridge ${spec.bridge}`);
  batch(
    ["-n", ns],
    [
      "link set lo up",
      `addr replace ${ip}/${spec.subnet.prefix} dev eth0`,
      "link set eth0 up",
      `route replace default via ${spec.gateway}`,
    ],
    "configure the container's eth0",
  );
  return netnsPath(id);
}

function batch(global: string[], lines: string[], what: string): void {
  const r = spawnSync("ip", [...global, "-batch", "-"], { input: `${lines.join("\n")}\n`, encoding: "utf8" });
  if (r.error || r.status !== 0) {
    throw new ManagerError(
      "NETWORK",
      `${what}: ip ${global.join(" ")} -batch failed: ${r.error?.message ?? r.stderr.trim()}`,
      { lines },
    );
  }
}

export function teardownNetns(id: string): void {
  // the veth first: deleting it takes its peer with it at once, so the bridge's port list is
  // right when it is read next; a namespace's own devices are freed asynchronously by the kernel
  if (interfaceExists(hostVeth(id))) sh("ip", ["link", "del", hostVeth(id)], "delete veth", true);
  if (existsSync(netnsPath(id))) sh("ip", ["netns", "del", netnsName(id)], "delete network namespace", true);
}

export interface PublishedPort {
  hostIp: string;
  hostPort: number;
  containerPort: number;
  protocol: "tcp" | "udp";
}

function dnatRule(id: string, p: PublishedPort, ip: string, bridge: string): string[] {
  return [
    "!",
    "-i",
    bridge,
    ...(p.hostIp !== "0.0.0.0" ? ["-d", `${p.hostIp}/32`] : []),
    "-p",
    p.protocol,
    "--dport",
    String(p.hostPort),
    "-m",
    "comment",
    "--comment",
    `vessel:${id.slice(0, 12)}`,
    "-j",
    "DNAT",
    "--to-destination",
    `${ip}:${p.containerPort}`,
  ];
}

/** DNAT rules for the published ports: how other hosts reach them (the proxy serves this one). */
export function addPortRules(id: string, ip: string, ports: PublishedPort[], bridge: string): void {
  for (const p of ports) iptablesEnsure("nat", "PREROUTING", dnatRule(id, p, ip, bridge));
}

/** Deletes every rule tagged with this container's id, whatever chain it is in. */
export function removePortRules(id: string): void {
  const tag = `vessel:${id.slice(0, 12)}`;
  for (const table of ["nat", "filter"]) {
    const saved = sh("iptables-save", ["-t", table], "iptables-save", true).out;
    for (const line of saved.split("\n")) {
      if (!line.startsWith("-A ") || !line.includes(tag)) continue;
      const args = splitRule(line.slice(3));
      sh("iptables", ["-w", "-t", table, "-D", ...args], "delete rule", true);
    }
  }
}

/** Splits an iptables-save rule line into arguments, honouring double quotes. */
export function splitRule(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m !== null; m = re.exec(line)) out.push(m[1] ?? m[2]!);
  return out;
}

/** Everything of this container's that networking left on the host (for leak checks). */
export function leftovers(id: string): string[] {
  const out: string[] = [];
  if (interfaceExists(hostVeth(id))) out.push(`veth ${hostVeth(id)}`);
  if (existsSync(netnsPath(id))) out.push(`netns ${netnsName(id)}`);
  const tag = `vessel:${id.slice(0, 12)}`;
  for (const table of ["nat", "filter"]) {
    for (const l of sh("iptables-save", ["-t", table], "iptables-save", true).out.split("\n"))
      if (l.includes(tag)) out.push(`iptables ${l}`);
  }
  return out;
}
