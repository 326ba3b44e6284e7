import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../../errors.js";
import { ManagerError } from "../manager/errors.js";
import { writeJsonAtomic } from "../manager/state.js";
import {
  type BridgeSpec,
  defaultBridge,
  ensureBridge,
  hostSubnets,
  interfaceExists,
  removeBridge,
  withNetworkLock,
} from "./bridge.js";
import { type HostsEntry, renderHosts, writeInPlace } from "./hosts_file.js";
import {
  firstFree,
  formatIpv4,
  formatSubnet,
  freeAddress,
  overlaps,
  parseIpv4,
  parseSubnet,
  type Subnet,
  usableHost,
} from "./subnet.js";

/**
 * User networks (`vessel network create`): each a bridge of its own with a subnet of its own,
 * recorded in `<root>/network/networks.json` with the containers on it (their address and names,
 * which is also how they find each other by name: hosts_file.ts). Made at `create` (bridge and
 * NAT rule; undone if any step fails), gone at `rm`, which refuses while a container uses it.
 * Every change holds the host's network lock: bridges and subnets are one per host, whichever
 * Vessel root made them.
 */

export interface Endpoint {
  ip: string;
  /** How peers reach it: the container's name, its short id and its --network-alias values. */
  names: string[];
  /** Its own name for itself (first on its own line of the hosts file). */
  hostname: string;
  hostsFile: string;
  /** The monitor that holds it: an endpoint whose monitor died is dropped at the next change. */
  pid: number;
}

export interface NetworkRecord {
  id: string;
  name: string;
  driver: "bridge";
  bridge: string;
  subnet: string;
  gateway: string;
  created: string;
  labels: Record<string, string>;
  /** container id → endpoint, for the containers running on it. */
  endpoints: Record<string, Endpoint>;
}

/** The networks every root has, which cannot be created or removed (docker's three). */
export const BUILTIN_NETWORKS = ["bridge", "host", "none"] as const;
export type BuiltinNetwork = (typeof BUILTIN_NETWORKS)[number];

export function isBuiltin(name: string): name is BuiltinNetwork {
  return (BUILTIN_NETWORKS as readonly string[]).includes(name);
}

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** Where `network create` without --subnet takes a /24 from (docker's pools are 172.17-31/16). */
export function addressPool(): Subnet {
  return parseSubnet(process.env.VESSEL_NETWORK_POOL ?? "10.122.0.0/16");
}

/** The host operations a network store needs; a recording fake stands in for them in unit tests. */
export interface HostNetwork {
  locked<T>(fn: () => T): T;
  /** Subnets the host routes already (other roots' bridges among them). */
  subnetsInUse(): Subnet[];
  ensureBridge(spec: BridgeSpec): void;
  removeBridge(spec: BridgeSpec): void;
  interfaceExists(name: string): boolean;
}

export const hostNetwork: HostNetwork = {
  locked: withNetworkLock,
  subnetsInUse: hostSubnets,
  ensureBridge,
  removeBridge,
  interfaceExists,
};

/** A container that uses a network, as `rm` names it when it refuses. */
export interface NetworkUser {
  id: string;
  name: string;
  status: string;
}

export interface CreateNetworkRequest {
  name: string;
  subnet?: string;
  gateway?: string;
  labels?: Record<string, string>;
}

export function bridgeSpec(n: NetworkRecord): BridgeSpec {
  return {
    bridge: n.bridge,
    subnet: parseSubnet(n.subnet),
    gateway: n.gateway,
    tag: `vessel-net:${n.id.slice(0, 12)}`,
  };
}

export class NetworkStore {
  private readonly file: string;

  constructor(
    readonly root: string,
    /** The containers of this root configured on a network (any state). */
    private readonly users: (network: string) => NetworkUser[] = () => [],
    private readonly host: HostNetwork = hostNetwork,
  ) {
    this.file = join(root, "network", "networks.json");
  }

  list(): NetworkRecord[] {
    if (!existsSync(this.file)) return [];
    return (JSON.parse(readFileSync(this.file, "utf8")) as { networks: NetworkRecord[] }).networks;
  }

  private save(networks: NetworkRecord[]): void {
    mkdirSync(join(this.root, "network"), { recursive: true });
    writeJsonAtomic(this.file, { networks });
  }

  /** By name, full id or unique id prefix (as docker resolves them). */
  find(ref: string): NetworkRecord | undefined {
    const all = this.list();
    const exact = all.find((n) => n.name === ref || n.id === ref);
    if (exact) return exact;
    if (!/^[0-9a-f]{3,63}$/.test(ref)) return undefined;
    const hits = all.filter((n) => n.id.startsWith(ref));
    return hits.length === 1 ? hits[0] : undefined;
  }

  get(ref: string): NetworkRecord {
    const n = this.find(ref);
    if (n === undefined)
      throw new ManagerError("NO_SUCH_NETWORK", `no such network: "${ref}" (see \`vessel network ls\`)`, {
        ref,
      });
    return n;
  }

  /**
   * Makes a network: checks name and addresses, creates the bridge and its rules, then records
   * it. A failing step removes what the earlier ones made, so a refused create leaves nothing.
   */
  create(req: CreateNetworkRequest): NetworkRecord {
    const { name } = req;
    if (!NAME_RE.test(name))
      throw new UsageError("BAD_NAME", `invalid network name "${name}": use [a-zA-Z0-9][a-zA-Z0-9_.-]*`, {
        name,
      });
    if (isBuiltin(name) || name === "default")
      throw new UsageError("BAD_NAME", `"${name}" is a built-in network name; choose another`, { name });
    const asked = req.subnet !== undefined ? parseSubnet(req.subnet) : undefined;
    return this.host.locked(() => {
      const all = this.list();
      if (all.some((n) => n.name === name))
        throw new ManagerError("NETWORK_EXISTS", `a network named "${name}" exists already`, { name });
      const taken: { what: string; subnet: Subnet }[] = [
        ...all.map((n) => ({ what: `network "${n.name}"`, subnet: parseSubnet(n.subnet) })),
        { what: "the default bridge network", subnet: defaultBridge().subnet },
        ...this.host.subnetsInUse().map((s) => ({ what: "a route of this host", subnet: s })),
      ];
      let subnet: Subnet;
      if (asked !== undefined) {
        const clash = taken.find((t) => overlaps(t.subnet, asked));
        if (clash)
          throw new ManagerError(
            "SUBNET_IN_USE",
            `subnet ${formatSubnet(asked)} overlaps ${clash.what} (${formatSubnet(clash.subnet)}); choose another --subnet`,
            { subnet: formatSubnet(asked) },
          );
        subnet = asked;
      } else {
        const free = firstFree(
          addressPool(),
          taken.map((t) => t.subnet),
        );
        if (free === undefined)
          throw new ManagerError(
            "SUBNET_IN_USE",
            `no free /24 left in ${formatSubnet(addressPool())}; remove unused networks (vessel network prune) or give --subnet`,
          );
        subnet = free;
      }
      let gateway = formatIpv4(subnet.base + 1);
      if (req.gateway !== undefined) {
        const gw = parseIpv4(req.gateway);
        if (gw === undefined || !usableHost(subnet, gw))
          throw new UsageError(
            "BAD_GATEWAY",
            `invalid --gateway "${req.gateway}": expected an address of ${formatSubnet(subnet)} other than its network and broadcast addresses`,
            { value: req.gateway },
          );
        gateway = req.gateway;
      }
      const id = randomBytes(32).toString("hex");
      const record: NetworkRecord = {
        id,
        name,
        driver: "bridge",
        // IFNAMSIZ is 16 with the NUL: "vsl-" and 11 hex digits
        bridge: `vsl-${id.slice(0, 11)}`,
        subnet: formatSubnet(subnet),
        gateway,
        created: new Date().toISOString(),
        labels: req.labels ?? {},
        endpoints: {},
      };
      const spec = bridgeSpec(record);
      try {
        this.host.ensureBridge(spec);
        this.save([...all, record]);
      } catch (err) {
        try {
          this.host.removeBridge(spec);
        } catch {
          // report the first failure
        }
        throw err;
      }
      return record;
    });
  }

  /** Removes a network no container uses: its bridge and rules, then its record. */
  remove(ref: string): NetworkRecord {
    if (isBuiltin(ref))
      throw new UsageError("BUILTIN_NETWORK", `"${ref}" is a built-in network and cannot be removed`, {
        ref,
      });
    return this.host.locked(() => {
      const n = this.get(ref);
      const users = this.users(n.name);
      if (users.length > 0) {
        const names = users.map((u) => `${u.name} (${u.status})`).join(", ");
        throw new ManagerError(
          "NETWORK_IN_USE",
          `network "${n.name}" has containers on it: ${names}; remove them first (vessel container rm -f ${users.map((u) => u.name).join(" ")})`,
          { network: n.name, containers: users.map((u) => u.id) },
        );
      }
      this.host.removeBridge(bridgeSpec(n));
      this.save(this.list().filter((x) => x.id !== n.id));
      return n;
    });
  }

  /** Removes every user network no container uses; returns their names. */
  prune(): string[] {
    const removed: string[] = [];
    for (const n of this.list()) {
      if (this.users(n.name).length > 0) continue;
      try {
        removed.push(this.remove(n.id).name);
      } catch (err) {
        // a container came onto it since the check: it stays
        if (!(err instanceof ManagerError && err.code === "NETWORK_IN_USE")) throw err;
      }
    }
    return removed;
  }

  /**
   * Puts a container on the network: an address, the bridge (made again after a reboot), and the
   * hosts file of every container on it rewritten. Call with the network lock held.
   */
  attachLocked(
    ref: string,
    containerId: string,
    ep: Omit<Endpoint, "ip">,
    alive: (containerId: string, ep: Endpoint) => boolean,
  ): { spec: BridgeSpec; ip: string } {
    const all = this.list();
    const n = all.find((x) => x.name === ref || x.id === ref);
    if (n === undefined)
      throw new ManagerError(
        "NO_SUCH_NETWORK",
        `network "${ref}" no longer exists; create it again (vessel network create ${ref}) or run the container on another network`,
        { ref },
      );
    for (const [id, e] of Object.entries(n.endpoints))
      if (id !== containerId && !alive(id, e)) delete n.endpoints[id];
    const spec = bridgeSpec(n);
    const ip =
      n.endpoints[containerId]?.ip ??
      freeAddress(
        spec.subnet,
        n.gateway,
        Object.values(n.endpoints).map((e) => e.ip),
      );
    if (ip === undefined)
      throw new ManagerError("NETWORK", `no free address left in network "${n.name}" (${n.subnet})`, {
        network: n.name,
      });
    this.host.ensureBridge(spec);
    n.endpoints[containerId] = { ...ep, ip };
    this.save(all);
    syncHosts(n);
    return { spec, ip };
  }

  /** Takes a container off whatever network of this root it is on. Call with the lock held. */
  detachLocked(containerId: string): void {
    const all = this.list();
    for (const n of all) {
      if (n.endpoints[containerId] === undefined) continue;
      delete n.endpoints[containerId];
      this.save(all);
      syncHosts(n);
    }
  }
}

/** Writes each member's hosts file: itself, then every other member by its names. */
function syncHosts(n: NetworkRecord): void {
  const members = Object.entries(n.endpoints);
  for (const [id, e] of members) {
    const peers: HostsEntry[] = members
      .filter(([other]) => other !== id)
      .map(([, p]) => ({ ip: p.ip, names: p.names }));
    try {
      writeInPlace(e.hostsFile, renderHosts({ ip: e.ip, names: [e.hostname, ...e.names] }, peers));
    } catch {
      // its directory is gone (removed meanwhile): the next change drops it
    }
  }
}
