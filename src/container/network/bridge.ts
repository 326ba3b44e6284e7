import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { withLockFile } from "../lock_file.js";
import { ManagerError } from "../manager/errors.js";

/**
 * Container networking, docker's "bridge" driver done with iproute2 and iptables:
 * - one Linux bridge `vessel0` holding the gateway address of a private /24;
 * - per container a network namespace (`ip netns add`, so it outlives any process and can be
 *   joined by path from the OCI config) and a veth pair: `vv<id>` on the bridge, `eth0` inside;
 * - addresses handed out from a small file-backed allocator;
 * - NAT to the outside by one MASQUERADE rule for the subnet; published ports by a DNAT rule per
 *   port for traffic from other hosts (tagged with the container id so teardown finds it) and a
 *   userspace proxy in the monitor for connections from the host itself (DNAT does not see
 *   locally generated connections to 127.0.0.1).
 * The bridge and the MASQUERADE rule are shared and stay; everything per container goes on rm.
 */

export const BRIDGE = process.env.VESSEL_BRIDGE ?? "vessel0";
export const SUBNET_PREFIX = process.env.VESSEL_SUBNET_PREFIX ?? "10.121.0";
export const SUBNET = `${SUBNET_PREFIX}.0/24`;
export const GATEWAY = `${SUBNET_PREFIX}.1`;

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
      {
        cmd,
        args,
      },
    );
  }
  return { ok, out: r.stdout ?? "", err: r.stderr ?? "" };
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

function iptablesEnsure(table: string, chain: string, rule: string[]): void {
  if (!sh("iptables", ["-w", "-t", table, "-C", chain, ...rule], "iptables check", true).ok) {
    sh("iptables", ["-w", "-t", table, "-A", chain, ...rule], "iptables append");
  }
}

let bridgeChecked = false;

/** Creates the bridge, its address, forwarding and the NAT rule if they are missing. */
export function ensureBridge(): void {
  // once per process, and skipped when this boot already set the bridge up (the marker holds the
  // boot id, so a reboot, which loses bridge and rules, sets them up again)
  if (bridgeChecked) return;
  const marker = "/run/vessel-bridge-ready";
  let bootId = "";
  try {
    bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    if (
      readFileSync(marker, "utf8").trim() === `${BRIDGE} ${SUBNET} ${bootId}` &&
      existsSync(`/sys/class/net/${BRIDGE}`)
    ) {
      bridgeChecked = true;
      return;
    }
  } catch {
    // no marker yet
  }
  setupBridge();
  bridgeChecked = true;
  try {
    writeFileSync(marker, `${BRIDGE} ${SUBNET} ${bootId}\n`);
  } catch {
    // /run not writable: check every time
  }
}

function setupBridge(): void {
  if (!sh("ip", ["link", "show", BRIDGE], "ip link show", true).ok) {
    const add = sh("ip", ["link", "add", BRIDGE, "type", "bridge"], "create bridge", true);
    if (!add.ok && !add.err.includes("File exists"))
      throw new ManagerError("NETWORK", `cannot create bridge ${BRIDGE}: ${add.err}`);
  }
  const addr = sh("ip", ["-4", "addr", "show", "dev", BRIDGE], "ip addr", true);
  if (!addr.out.includes(`${GATEWAY}/24`))
    sh("ip", ["addr", "add", `${GATEWAY}/24`, "dev", BRIDGE], "bridge address", true);
  sh("ip", ["link", "set", BRIDGE, "up"], "bridge up");
  try {
    if (readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim() !== "1")
      writeFileSync("/proc/sys/net/ipv4/ip_forward", "1");
  } catch (err) {
    throw new ManagerError("NETWORK", `cannot enable IPv4 forwarding: ${(err as Error).message}`);
  }
  iptablesEnsure("nat", "POSTROUTING", [
    "-s",
    SUBNET,
    "!",
    "-o",
    BRIDGE,
    "-j",
    "MASQUERADE",
    "-m",
    "comment",
    "--comment",
    "vessel",
  ]);
  iptablesEnsure("filter", "FORWARD", ["-i", BRIDGE, "-j", "ACCEPT", "-m", "comment", "--comment", "vessel"]);
  iptablesEnsure("filter", "FORWARD", ["-o", BRIDGE, "-j", "ACCEPT", "-m", "comment", "--comment", "vessel"]);
}

/** A tiny address allocator: `<root>/network/ipam.json` maps container id → address. */
export class Ipam {
  private readonly file: string;
  private readonly lock: string;

  constructor(root: string) {
    const dir = join(root, "network");
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, "ipam.json");
    this.lock = join(dir, "ipam.lock");
  }

  private withLock<T>(fn: (table: Record<string, string>) => T): T {
    return withLockFile(
      this.lock,
      { staleMs: 10_000, timeoutMs: 20_000, pollMs: 5 },
      () =>
        new ManagerError(
          "NETWORK",
          `address allocator is locked (${this.lock} kept for 20 s): another vessel command is starting or removing a container; try again when that one ends`,
        ),
      () => {
        const table = existsSync(this.file)
          ? (JSON.parse(readFileSync(this.file, "utf8")) as Record<string, string>)
          : {};
        const out = fn(table);
        writeFileSync(this.file, JSON.stringify(table));
        return out;
      },
    );
  }

  allocate(id: string, alive: (id: string) => boolean): string {
    return this.withLock((table) => {
      if (table[id]) return table[id];
      for (const [k] of Object.entries(table)) if (!alive(k)) delete table[k];
      const used = new Set(Object.values(table));
      for (let host = 2; host < 255; host++) {
        const ip = `${SUBNET_PREFIX}.${host}`;
        if (!used.has(ip)) {
          table[id] = ip;
          return ip;
        }
      }
      throw new ManagerError("NETWORK", `no free address left in ${SUBNET}; remove some containers`);
    });
  }

  release(id: string): void {
    this.withLock((table) => {
      delete table[id];
    });
  }
}

/** Makes the container's namespace: only loopback for `none`, veth on the bridge for `bridge`. */
export function setupNetns(id: string, mode: "bridge" | "none", ip?: string): string {
  const ns = netnsName(id);
  if (!existsSync(netnsPath(id))) sh("ip", ["netns", "add", ns], "create network namespace");
  if (mode === "none") {
    sh("ip", ["-n", ns, "link", "set", "lo", "up"], "loopback up");
    return netnsPath(id);
  }
  if (ip === undefined) throw new ManagerError("NETWORK", "bridge network needs an address");
  ensureBridge();
  const veth = hostVeth(id);
  // two `ip -batch` runs instead of one process per step: host side, then inside the namespace
  const host = [
    ...(existsSync(`/sys/class/net/${veth}`)
      ? []
      : [`link add ${veth} type veth peer name eth0 netns ${ns}`]),
    `link set ${veth} master ${BRIDGE} up`,
  ];
  batch([], host, "attach a veth pair to the bridge");
  batch(
    ["-n", ns],
    [
      "link set lo up",
      `addr replace ${ip}/24 dev eth0`,
      "link set eth0 up",
      `route replace default via ${GATEWAY}`,
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
      {
        lines,
      },
    );
  }
}

export function teardownNetns(id: string, veth = true): void {
  // deleting the namespace deletes eth0 and with it its veth peer on the bridge
  if (existsSync(netnsPath(id))) sh("ip", ["netns", "del", netnsName(id)], "delete network namespace", true);
  if (veth && existsSync(`/sys/class/net/${hostVeth(id)}`))
    sh("ip", ["link", "del", hostVeth(id)], "delete veth", true);
}

function dnatRule(id: string, hostPort: number, ip: string, ctrPort: number, hostIp: string): string[] {
  return [
    "!",
    "-i",
    BRIDGE,
    ...(hostIp !== "0.0.0.0" ? ["-d", `${hostIp}/32`] : []),
    "-p",
    "tcp",
    "--dport",
    String(hostPort),
    "-m",
    "comment",
    "--comment",
    `vessel:${id.slice(0, 12)}`,
    "-j",
    "DNAT",
    "--to-destination",
    `${ip}:${ctrPort}`,
  ];
}

export function addPortRules(
  id: string,
  ip: string,
  ports: { hostIp: string; hostPort: number; containerPort: number }[],
): void {
  for (const p of ports)
    iptablesEnsure("nat", "PREROUTING", dnatRule(id, p.hostPort, ip, p.containerPort, p.hostIp));
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
  if (sh("ip", ["link", "show", hostVeth(id)], "ip link", true).ok) out.push(`veth ${hostVeth(id)}`);
  if (existsSync(netnsPath(id))) out.push(`netns ${netnsName(id)}`);
  const tag = `vessel:${id.slice(0, 12)}`;
  for (const table of ["nat", "filter"]) {
    for (const l of sh("iptables-save", ["-t", table], "iptables-save", true).out.split("\n"))
      if (l.includes(tag)) out.push(`iptables ${l}`);
  }
  return out;
}
