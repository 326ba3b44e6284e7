import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ManagerError } from "../../../src/container/manager/errors.js";
import type { BridgeSpec } from "../../../src/container/network/bridge.js";
import { type HostNetwork, NetworkStore, type NetworkUser } from "../../../src/container/network/networks.js";
import { formatSubnet, parseSubnet, type Subnet } from "../../../src/container/network/subnet.js";
import { UsageError } from "../../../src/errors.js";

/** The network store's rules over a recording fake of the host (no root, no bridges made). */

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

class FakeHost implements HostNetwork {
  calls: string[] = [];
  routes: Subnet[] = [];
  failEnsure = false;
  locked<T>(fn: () => T): T {
    this.calls.push("lock");
    return fn();
  }
  subnetsInUse(): Subnet[] {
    return this.routes;
  }
  ensureBridge(spec: BridgeSpec): void {
    this.calls.push(`ensure ${spec.bridge} ${formatSubnet(spec.subnet)} ${spec.gateway}`);
    if (this.failEnsure) throw new ManagerError("NETWORK", "ip link add failed (fake)");
  }
  removeBridge(spec: BridgeSpec): void {
    this.calls.push(`remove ${spec.bridge}`);
  }
  interfaceExists(): boolean {
    return false;
  }
}

function store(users: Record<string, NetworkUser[]> = {}): { s: NetworkStore; host: FakeHost; root: string } {
  const root = mkdtempSync(join(tmpdir(), "vessel-nets-"));
  dirs.push(root);
  const host = new FakeHost();
  return { s: new NetworkStore(root, (n) => users[n] ?? [], host), host, root };
}

function refused(
  fn: () => unknown,
  cls: typeof UsageError | typeof ManagerError,
  code: string,
  why: RegExp,
): void {
  assert.throws(
    fn,
    (e: unknown) => e instanceof cls && (e as ManagerError).code === code && why.test((e as Error).message),
  );
}

test("create takes the first /24 of the pool free of host routes and other networks, and records it", () => {
  const { s, host, root } = store();
  host.routes = [parseSubnet("10.122.0.0/24")];
  const a = s.create({ name: "app" });
  assert.equal(a.subnet, "10.122.1.0/24");
  assert.equal(a.gateway, "10.122.1.1");
  assert.match(a.bridge, /^vsl-[0-9a-f]{11}$/);
  assert.ok(a.bridge.length <= 15, "fits IFNAMSIZ");
  const b = s.create({ name: "db", subnet: "10.77.0.0/16", gateway: "10.77.3.4" });
  assert.equal(b.gateway, "10.77.3.4");
  assert.equal(s.create({ name: "third" }).subnet, "10.122.2.0/24");
  assert.deepEqual(
    host.calls.filter((c) => c.startsWith("ensure")),
    [
      `ensure ${a.bridge} 10.122.1.0/24 10.122.1.1`,
      `ensure ${b.bridge} 10.77.0.0/16 10.77.3.4`,
      expectedEnsure(s, "third"),
    ],
  );
  const again = new NetworkStore(root, () => [], host);
  assert.deepEqual(
    again.list().map((n) => n.name),
    ["app", "db", "third"],
  );
  assert.equal(again.get(a.id.slice(0, 8)).name, "app", "found by id prefix");
});

function expectedEnsure(s: NetworkStore, name: string): string {
  const n = s.get(name);
  return `ensure ${n.bridge} ${n.subnet} ${n.gateway}`;
}

test("bad input to create is refused before anything is made on the host", () => {
  const { s, host } = store();
  host.routes = [parseSubnet("192.168.1.0/24")];
  s.create({ name: "app", subnet: "10.60.0.0/24" });
  host.calls = [];
  refused(
    () => s.create({ name: "app" }),
    ManagerError,
    "NETWORK_EXISTS",
    /a network named "app" exists already/,
  );
  refused(() => s.create({ name: "bridge" }), UsageError, "BAD_NAME", /"bridge" is a built-in network name/);
  refused(() => s.create({ name: "-x" }), UsageError, "BAD_NAME", /invalid network name "-x"/);
  refused(
    () => s.create({ name: "n1", subnet: "10.60.0.1/24" }),
    UsageError,
    "BAD_SUBNET",
    /host bits are set/,
  );
  refused(
    () => s.create({ name: "n2", subnet: "10.60.0.0/16" }),
    ManagerError,
    "SUBNET_IN_USE",
    /subnet 10\.60\.0\.0\/16 overlaps network "app" \(10\.60\.0\.0\/24\); choose another --subnet/,
  );
  refused(
    () => s.create({ name: "n3", subnet: "192.168.0.0/16" }),
    ManagerError,
    "SUBNET_IN_USE",
    /overlaps a route of this host \(192\.168\.1\.0\/24\)/,
  );
  refused(
    () => s.create({ name: "n4", subnet: "10.121.0.0/16" }),
    ManagerError,
    "SUBNET_IN_USE",
    /overlaps the default bridge network/,
  );
  refused(
    () => s.create({ name: "n5", subnet: "10.61.0.0/24", gateway: "10.62.0.1" }),
    UsageError,
    "BAD_GATEWAY",
    /invalid --gateway "10\.62\.0\.1": expected an address of 10\.61\.0\.0\/24/,
  );
  refused(
    () => s.create({ name: "n6", subnet: "10.61.0.0/24", gateway: "10.61.0.255" }),
    UsageError,
    "BAD_GATEWAY",
    /broadcast/,
  );
  assert.deepEqual(
    host.calls.filter((c) => c !== "lock"),
    [],
    "no bridge made or removed",
  );
  assert.deepEqual(
    s.list().map((n) => n.name),
    ["app"],
  );
});

test("a bridge that cannot be made is removed again and the network is not recorded", () => {
  const { s, host } = store();
  host.failEnsure = true;
  assert.throws(() => s.create({ name: "broken" }), /ip link add failed/);
  const ensure = host.calls.find((c) => c.startsWith("ensure"))!;
  assert.equal(host.calls.at(-1), `remove ${ensure.split(" ")[1]}`);
  assert.deepEqual(s.list(), []);
});

test("rm refuses a network containers use, naming them; removes an unused one; prune keeps the used", () => {
  const users = {
    busy: [
      { id: "c1", name: "web", status: "running" },
      { id: "c2", name: "job", status: "exited" },
    ],
  };
  const { s, host } = store(users);
  const busy = s.create({ name: "busy" });
  const idle = s.create({ name: "idle" });
  s.create({ name: "idle2" });
  refused(
    () => s.remove("busy"),
    ManagerError,
    "NETWORK_IN_USE",
    /network "busy" has containers on it: web \(running\), job \(exited\); remove them first \(vessel container rm -f web job\)/,
  );
  refused(
    () => s.remove("none"),
    UsageError,
    "BUILTIN_NETWORK",
    /"none" is a built-in network and cannot be removed/,
  );
  refused(() => s.remove("nope"), ManagerError, "NO_SUCH_NETWORK", /no such network: "nope"/);
  host.calls = [];
  s.remove(idle.id);
  assert.deepEqual(host.calls, ["lock", `remove ${idle.bridge}`]);
  assert.deepEqual(s.prune(), ["idle2"]);
  assert.deepEqual(
    s.list().map((n) => n.name),
    ["busy"],
  );
  assert.ok(!host.calls.includes(`remove ${busy.bridge}`));
});

test("containers on a network get addresses in turn and each other's names in their hosts files", () => {
  const { s, root } = store();
  const n = s.create({ name: "app", subnet: "10.70.0.0/24" });
  const hosts = (c: string) => join(root, `${c}.hosts`);
  const live = new Set(["a", "b", "c"]);
  const alive = (id: string) => live.has(id);
  const ep = (c: string) => ({
    names: [c, `${c}-alias`],
    hostname: `${c}-host`,
    hostsFile: hosts(c),
    pid: 1,
  });
  assert.equal(s.attachLocked("app", "a", ep("a"), alive).ip, "10.70.0.2");
  const b = s.attachLocked(n.id, "b", ep("b"), alive);
  assert.equal(b.ip, "10.70.0.3");
  assert.equal(b.spec.bridge, n.bridge);
  assert.match(
    readFileSync(hosts("a"), "utf8"),
    /10\.70\.0\.2\ta-host a a-alias\n[\s\S]*10\.70\.0\.3\tb b-alias\n$/,
  );
  assert.match(
    readFileSync(hosts("b"), "utf8"),
    /10\.70\.0\.3\tb-host b b-alias\n[\s\S]*10\.70\.0\.2\ta a-alias\n$/,
  );
  assert.equal(
    s.attachLocked("app", "b", ep("b"), alive).ip,
    "10.70.0.3",
    "attaching again keeps the address",
  );
  s.detachLocked("a");
  assert.doesNotMatch(readFileSync(hosts("b"), "utf8"), /10\.70\.0\.2/);
  // a member whose monitor died without detaching is dropped when the next one comes
  live.delete("b");
  assert.equal(s.attachLocked("app", "c", ep("c"), alive).ip, "10.70.0.2");
  assert.deepEqual(Object.keys(s.get("app").endpoints), ["c"]);
  refused(
    () => s.attachLocked("gone", "d", ep("d"), alive),
    ManagerError,
    "NO_SUCH_NETWORK",
    /network "gone" no longer exists/,
  );
});
