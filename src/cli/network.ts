import { shortId } from "../container/image/digest.js";
import { Manager } from "../container/manager/manager.js";
import { defaultBridge } from "../container/network/bridge.js";
import { BUILTIN_NETWORKS } from "../container/network/networks.js";
import { formatSubnet } from "../container/network/subnet.js";
import { UsageError } from "../errors.js";
import { bool, list, parseDockerArgs, str, table } from "./docker_args.js";

/**
 * `vessel network <verb>`: docker's network verbs over the manager's NetworkStore
 * (src/container/network/networks.ts): create, ls, inspect, rm, prune.
 */

const USAGE = `usage: vessel network <command>

  create [--subnet CIDR] [--gateway IP] [--label K=V] NAME
                            a bridge of its own (a free /24 of 10.122.0.0/16 without --subnet);
                            its containers (run --network NAME) find each other by name
  ls [-q]                   list networks (bridge, host and none are built in)
  inspect NAME...           the network's record and the containers on it
  rm NAME...                remove networks no container uses
  prune                     remove every network no container uses
`;

export async function run(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (rest[0] === "--help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const m = new Manager();
  switch (verb) {
    case "create":
      return create(m, rest);
    case "ls":
    case "list":
      return ls(m, rest);
    case "inspect":
      return inspect(m, rest);
    case "rm":
    case "remove":
      return rm(m, rest);
    case "prune":
      parseDockerArgs(rest, { force: { short: "f" } }, false);
      for (const name of m.networks.prune()) process.stdout.write(`${name}\n`);
      return 0;
    case undefined:
    case "help":
    case "--help":
      process.stdout.write(USAGE);
      return verb === undefined ? 2 : 0;
    default:
      throw new UsageError("BAD_VERB", `unknown network command "${verb}"\n${USAGE}`);
  }
}

function create(m: Manager, args: string[]): number {
  const p = parseDockerArgs(
    args,
    {
      subnet: { value: true },
      gateway: { value: true },
      label: { value: true, multi: true },
      driver: { short: "d", value: true },
    },
    false,
  );
  const [name, ...extra] = p.positionals;
  if (name === undefined || extra.length > 0)
    throw new UsageError("NO_NETWORK", `network create needs exactly one name\n${USAGE}`);
  const driver = str(p, "driver") ?? "bridge";
  if (driver !== "bridge")
    throw new UsageError("BAD_DRIVER", `invalid --driver "${driver}": only the bridge driver is available`);
  const labels: Record<string, string> = {};
  for (const l of list(p, "label")) {
    const eq = l.indexOf("=");
    labels[eq < 0 ? l : l.slice(0, eq)] = eq < 0 ? "" : l.slice(eq + 1);
  }
  const subnet = str(p, "subnet");
  const gateway = str(p, "gateway");
  const n = m.networks.create({
    name,
    labels,
    ...(subnet !== undefined ? { subnet } : {}),
    ...(gateway !== undefined ? { gateway } : {}),
  });
  process.stdout.write(`${n.id}\n`);
  return 0;
}

function ls(m: Manager, args: string[]): number {
  const p = parseDockerArgs(args, { quiet: { short: "q" } }, false);
  const users = new Map<string, number>();
  for (const v of m.list(true)) users.set(v.config.network, (users.get(v.config.network) ?? 0) + 1);
  const user = m.networks.list();
  if (bool(p, "quiet")) {
    for (const n of user) process.stdout.write(`${shortId(n.id)}\n`);
    return 0;
  }
  const rows = [["NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE", "CONTAINERS"]];
  const def = defaultBridge();
  for (const name of BUILTIN_NETWORKS) {
    const bridge = name === "bridge";
    rows.push([
      "-",
      name,
      bridge ? "bridge" : name === "host" ? "host" : "null",
      bridge ? formatSubnet(def.subnet) : "",
      bridge ? def.bridge : "",
      String(users.get(name) ?? 0),
    ]);
  }
  for (const n of user)
    rows.push([shortId(n.id), n.name, n.driver, n.subnet, n.bridge, String(users.get(n.name) ?? 0)]);
  process.stdout.write(table(rows));
  return 0;
}

function inspect(m: Manager, args: string[]): number {
  const p = parseDockerArgs(args, {}, false);
  if (p.positionals.length === 0) throw new UsageError("NO_NETWORK", "inspect needs a network");
  const out = p.positionals.map((ref) => {
    const n = m.networks.get(ref);
    return {
      Id: n.id,
      Name: n.name,
      Created: n.created,
      Driver: n.driver,
      IPAM: { Config: [{ Subnet: n.subnet, Gateway: n.gateway }] },
      Options: { "com.docker.network.bridge.name": n.bridge },
      Labels: n.labels,
      Containers: Object.fromEntries(
        Object.entries(n.endpoints).map(([id, e]) => [id, { Name: e.names[0], IPv4Address: e.ip }]),
      ),
    };
  });
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}

function rm(m: Manager, args: string[]): number {
  const p = parseDockerArgs(args, { force: { short: "f" } }, false);
  if (p.positionals.length === 0) throw new UsageError("NO_NETWORK", "rm needs at least one network");
  let failed = 0;
  for (const ref of p.positionals) {
    try {
      m.networks.remove(ref);
      process.stdout.write(`${ref}\n`);
    } catch (err) {
      if (p.positionals.length === 1) throw err;
      process.stderr.write(`vessel network rm: ${(err as Error).message}\n`);
      failed++;
    }
  }
  return failed ? 1 : 0;
}
