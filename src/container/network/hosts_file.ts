import { closeSync, constants, ftruncateSync, openSync, writeSync } from "node:fs";

/**
 * The container's /etc/hosts (bound in from `<container>/etc/hosts`, see oci_config.ts).
 *
 * Name resolution between containers of a user network is done with this file, not with a DNS
 * server of ours: the network keeps, per container on it, the address and the names (container
 * name and --network-alias values), and rewrites every member's hosts file when a member comes or
 * goes (networks.ts, under the network lock). That needs no process on the bridge, works with any
 * libc (glibc's and musl's "files" lookup, busybox's static applets), and the kernel's view of
 * the file is the one bind mount, so a rewrite in place is seen at the next lookup. Its limit,
 * which docker's embedded DNS does not have: a program that caches lookups (or reads the file
 * once) does not see later peers; and `nslookup`, which asks DNS only, does not see any.
 */

export interface HostsEntry {
  ip: string;
  names: string[];
}

const HEADER = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/** The file's text: localhost, the container itself, then its peers (sorted, for stable output). */
export function renderHosts(self: HostsEntry | { hostname: string }, peers: HostsEntry[] = []): string {
  let text = HEADER;
  if ("ip" in self) text += `${self.ip}\t${unique(self.names).join(" ")}\n`;
  else text += `127.0.1.1\t${self.hostname}\n`;
  const sorted = [...peers].sort((a, b) => a.ip.localeCompare(b.ip, "en", { numeric: true }));
  if (sorted.length > 0) text += "# peers on this network (kept up to date by vessel)\n";
  for (const p of sorted) text += `${p.ip}\t${unique(p.names).join(" ")}\n`;
  return text;
}

function unique(names: string[]): string[] {
  return [...new Set(names.filter((n) => n !== ""))];
}

/**
 * Rewrites the file in place: same inode (a rename would leave the container's bind mount on
 * the old file), and written before it is cut to length, so a reader never sees it empty.
 */
export function writeInPlace(path: string, text: string): void {
  // not "a+": with O_APPEND, Linux writes at the end whatever the position given
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
  try {
    const buf = Buffer.from(text);
    writeSync(fd, buf, 0, buf.length, 0);
    ftruncateSync(fd, buf.length);
  } finally {
    closeSync(fd);
  }
}
