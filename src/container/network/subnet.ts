import { UsageError } from "../../errors.js";

/**
 * IPv4 subnets as numbers: parsing `10.122.3.0/24`, overlap, and the addresses a bridge network
 * hands out (RFC 4632 CIDR notation; the network and broadcast addresses of RFC 919/922 are never
 * given to a container).
 */

export interface Subnet {
  /** The network address as an unsigned 32-bit number (host bits zero). */
  base: number;
  prefix: number;
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** `a.b.c.d` → number, or undefined when the text is not a dotted quad of bytes. */
export function parseIpv4(text: string): number | undefined {
  const m = IPV4_RE.exec(text);
  if (!m) return undefined;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const b = Number(m[i]);
    if (b > 255) return undefined;
    n = n * 256 + b;
  }
  return n;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** The smallest and largest prefix a network may have: /30 leaves two hosts (gateway + one). */
export const MIN_PREFIX = 8;
export const MAX_PREFIX = 30;

/** Parses `--subnet`: a CIDR whose host bits are zero, /8 to /30. */
export function parseSubnet(text: string): Subnet {
  const bad = (why: string) =>
    new UsageError("BAD_SUBNET", `invalid --subnet "${text}": ${why}`, { value: text });
  const slash = text.indexOf("/");
  if (slash < 0) throw bad("expected an IPv4 CIDR such as 10.50.0.0/24");
  const base = parseIpv4(text.slice(0, slash));
  if (base === undefined) throw bad(`"${text.slice(0, slash)}" is not an IPv4 address`);
  const p = text.slice(slash + 1);
  if (!/^\d{1,2}$/.test(p) || Number(p) < MIN_PREFIX || Number(p) > MAX_PREFIX)
    throw bad(`the prefix length must be ${MIN_PREFIX} to ${MAX_PREFIX}`);
  const prefix = Number(p);
  const net = (base & mask(prefix)) >>> 0;
  if (net !== base) throw bad(`host bits are set: the network is ${formatSubnet({ base: net, prefix })}`);
  return { base, prefix };
}

export function formatSubnet(s: Subnet): string {
  return `${formatIpv4(s.base)}/${s.prefix}`;
}

export function contains(s: Subnet, ip: number): boolean {
  return (ip & mask(s.prefix)) >>> 0 === s.base;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return (a.base & mask(p)) >>> 0 === (b.base & mask(p)) >>> 0;
}

/** The n-th address of the subnet (n = 1 is the usual gateway). */
export function hostAddress(s: Subnet, n: number): number {
  return (s.base + n) >>> 0;
}

/** How many addresses the subnet holds, network and broadcast included. */
export function size(s: Subnet): number {
  return 2 ** (32 - s.prefix);
}

/** True when `ip` may be given to a host: inside the subnet, not its network or broadcast address. */
export function usableHost(s: Subnet, ip: number): boolean {
  return contains(s, ip) && ip !== s.base && ip !== s.base + size(s) - 1;
}

/**
 * The first /24 of `pool` that overlaps none of `used`: how `network create` without --subnet
 * picks one (docker's default address pools do the same over 172.17-31.0.0/16).
 */
export function firstFree(pool: Subnet, used: Subnet[], prefix = 24): Subnet | undefined {
  const step = 2 ** (32 - prefix);
  for (let base = pool.base; base < pool.base + size(pool); base += step) {
    const s = { base: base >>> 0, prefix };
    if (!used.some((u) => overlaps(u, s))) return s;
  }
  return undefined;
}

/** The lowest address of the subnet that is neither the gateway nor in `used`, from .2 up. */
export function freeAddress(s: Subnet, gateway: string, used: Iterable<string>): string | undefined {
  const taken = new Set(used);
  taken.add(gateway);
  for (let n = 1; n < size(s) - 1; n++) {
    const ip = formatIpv4(hostAddress(s, n));
    if (!taken.has(ip)) return ip;
  }
  return undefined;
}
