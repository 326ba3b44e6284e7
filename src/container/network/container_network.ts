import { writeFileSync } from "node:fs";
import {
  addPortRules,
  bridgePorts,
  defaultBridge,
  ensureBridge,
  interfaceExists,
  type PublishedPort,
  removeBridge,
  removePortRules,
  setupNetns,
  teardownNetns,
  withNetworkLock,
} from "./bridge.js";
import { renderHosts } from "./hosts_file.js";
import { Ipam } from "./ipam.js";
import { isBuiltin, NetworkStore } from "./networks.js";

/**
 * One container's networking, from the monitor's point of view: `connectContainer` before the
 * runtime starts it, `disconnectContainer` when it is done (and again by `rm`: idempotent).
 * The modes are docker's: `host` (the host's namespace), `none` (loopback only), `bridge` (the
 * default network, no names) and a user network's name (names of peers in /etc/hosts).
 */

export interface ContainerNetworkConfig {
  id: string;
  name: string;
  hostname: string;
  network: string;
  ports: PublishedPort[];
  networkAliases?: string[];
}

export interface Connected {
  netnsPath?: string;
  ip?: string;
  gateway?: string;
}

/**
 * Sets up the container's namespace and writes its hosts file. The default bridge is made here
 * when missing; allocation, bridge and veth happen under one hold of the network lock, so the
 * last container of another run cannot remove the bridge in between.
 */
export function connectContainer(
  root: string,
  cfg: ContainerNetworkConfig,
  /** The container's state directory, and the hosts file in it that is bound to /etc/hosts. */
  paths: { dir: string; hostsFile: string },
  /** Whether a container id of this root still has a record (removed ones lose their names). */
  exists: (id: string) => boolean,
  monitorPid: number = process.pid,
  alive: (pid: number) => boolean = () => true,
): Connected {
  const { dir, hostsFile } = paths;
  if (cfg.network === "host" || cfg.network === "none") {
    const netnsPath = cfg.network === "none" ? setupNetns(cfg.id) : undefined;
    writeFileSync(hostsFile, renderHosts({ hostname: cfg.hostname }));
    return netnsPath !== undefined ? { netnsPath } : {};
  }
  if (cfg.network === "bridge") {
    const spec = defaultBridge();
    const { ip, netnsPath } = withNetworkLock(() => {
      const ip = new Ipam(spec).allocate(dir);
      ensureBridge(spec);
      const netnsPath = setupNetns(cfg.id, { spec, ip });
      addPortRules(cfg.id, ip, cfg.ports, spec.bridge);
      return { ip, netnsPath };
    });
    writeFileSync(hostsFile, renderHosts({ ip, names: [cfg.hostname] }));
    return { netnsPath, ip, gateway: spec.gateway };
  }
  const store = new NetworkStore(root);
  return withNetworkLock(() => {
    const { spec, ip } = store.attachLocked(
      cfg.network,
      cfg.id,
      {
        names: [cfg.name, cfg.id.slice(0, 12), ...(cfg.networkAliases ?? [])],
        hostname: cfg.hostname,
        hostsFile,
        pid: monitorPid,
      },
      (id, ep) => exists(id) && alive(ep.pid),
    );
    const netnsPath = setupNetns(cfg.id, { spec, ip });
    addPortRules(cfg.id, ip, cfg.ports, spec.bridge);
    return { netnsPath, ip, gateway: spec.gateway };
  });
}

/**
 * Undoes connectContainer: port rules, veth and namespace, the address, the peers' hosts entries;
 * and the default bridge with its rules when this was the last container on it. Without the
 * container's config (a half-written record) everything it could have made is undone.
 */
export function disconnectContainer(
  root: string,
  id: string,
  dir: string,
  cfg: ContainerNetworkConfig | undefined,
): void {
  if (cfg === undefined || cfg.ports.length > 0) removePortRules(id);
  if (cfg?.network === "host") return;
  const onDefault = cfg === undefined || cfg.network === "bridge";
  const onUser = cfg === undefined || !isBuiltin(cfg.network);
  withNetworkLock(() => {
    teardownNetns(id);
    const spec = defaultBridge();
    if (onDefault) new Ipam(spec).release(dir);
    if (onUser) new NetworkStore(root).detachLocked(id);
    // the bridge's ports are every root's containers on it (one bridge per host)
    if (onDefault && interfaceExists(spec.bridge) && bridgePorts(spec.bridge).length === 0)
      removeBridge(spec);
  });
}
