import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Ipam } from "../../../src/container/network/ipam.js";
import { parseSubnet } from "../../../src/container/network/subnet.js";

const dir = mkdtempSync(join(tmpdir(), "vessel-ipam-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function container(root: string, id: string): string {
  const d = join(dir, root, "containers", id);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, "container.json"), "{}");
  return d;
}

test("the default bridge's addresses are one table for every root; removed containers' are reclaimed", () => {
  const spec = { bridge: "vtest0", subnet: parseSubnet("10.5.5.0/29"), gateway: "10.5.5.1", tag: "vessel" };
  const ipam = new Ipam(spec, join(dir, "run"));
  const a = container("rootA", "a");
  const b = container("rootB", "a"); // the same id in another root is another container
  assert.equal(ipam.allocate(a), "10.5.5.2");
  assert.equal(new Ipam(spec, join(dir, "run")).allocate(b), "10.5.5.3");
  assert.equal(ipam.allocate(a), "10.5.5.2", "asked again: the same address");
  rmSync(a, { recursive: true });
  assert.equal(ipam.allocate(container("rootA", "c")), "10.5.5.2", "a's record is gone: its address is free");
  ipam.release(b);
  assert.equal(ipam.allocate(container("rootC", "d")), "10.5.5.3");
  for (const id of ["e", "f", "g"]) ipam.allocate(container("rootC", id));
  assert.throws(
    () => ipam.allocate(container("rootC", "h")),
    /no free address left in 10\.5\.5\.0\/29 \(the default bridge vtest0\)/,
  );
});
