import assert from "node:assert/strict";
import { test } from "node:test";
import {
  contains,
  firstFree,
  formatSubnet,
  freeAddress,
  overlaps,
  parseIpv4,
  parseSubnet,
  usableHost,
} from "../../../src/container/network/subnet.js";
import { UsageError } from "../../../src/errors.js";

test("parseSubnet reads a CIDR and refuses host bits, bad prefixes and bad addresses, quoting them", () => {
  assert.deepEqual(parseSubnet("10.50.0.0/24"), { base: parseIpv4("10.50.0.0"), prefix: 24 });
  assert.equal(formatSubnet(parseSubnet("172.20.0.0/16")), "172.20.0.0/16");
  const cases: [string, RegExp][] = [
    ["10.50.0.1/24", /host bits are set: the network is 10\.50\.0\.0\/24/],
    ["10.50.0.0", /expected an IPv4 CIDR/],
    ["10.50.0.0/31", /prefix length must be 8 to 30/],
    ["10.50.0.0/x", /prefix length/],
    ["300.1.1.0/24", /"300\.1\.1\.0" is not an IPv4 address/],
    ["banana/24", /not an IPv4 address/],
  ];
  for (const [text, why] of cases)
    assert.throws(
      () => parseSubnet(text),
      (e: unknown) =>
        e instanceof UsageError &&
        e.code === "BAD_SUBNET" &&
        e.message.includes(`"${text}"`) &&
        why.test(e.message),
      text,
    );
});

test("overlap and membership compare at the shorter prefix", () => {
  const a = parseSubnet("10.122.0.0/16");
  const b = parseSubnet("10.122.7.0/24");
  assert.ok(overlaps(a, b) && overlaps(b, a));
  assert.ok(!overlaps(b, parseSubnet("10.122.8.0/24")));
  assert.ok(contains(b, parseIpv4("10.122.7.200")!));
  assert.ok(!contains(b, parseIpv4("10.122.8.1")!));
  assert.ok(usableHost(b, parseIpv4("10.122.7.1")!));
  assert.ok(!usableHost(b, parseIpv4("10.122.7.0")!), "network address");
  assert.ok(!usableHost(b, parseIpv4("10.122.7.255")!), "broadcast address");
});

test("firstFree skips used /24s of the pool; freeAddress skips the gateway and taken addresses", () => {
  const pool = parseSubnet("10.122.0.0/16");
  const used = [parseSubnet("10.122.0.0/24"), parseSubnet("10.122.1.0/25"), parseSubnet("10.122.3.0/24")];
  assert.equal(formatSubnet(firstFree(pool, used)!), "10.122.2.0/24");
  assert.equal(firstFree(parseSubnet("10.122.0.0/23"), [pool]), undefined);
  const s = parseSubnet("10.9.9.0/30");
  assert.equal(freeAddress(s, "10.9.9.1", []), "10.9.9.2");
  assert.equal(freeAddress(s, "10.9.9.1", ["10.9.9.2"]), undefined, "a /30 has two hosts");
  assert.equal(freeAddress(parseSubnet("10.9.9.0/24"), "10.9.9.2", ["10.9.9.1"]), "10.9.9.3");
});
