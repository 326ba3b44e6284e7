import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { withLockFile } from "../lock_file.js";
import { ManagerError } from "../manager/errors.js";
import type { BridgeSpec } from "./bridge.js";
import { formatSubnet, freeAddress } from "./subnet.js";

/**
 * The default network's address allocator: `<root>/network/ipam.json` maps container id →
 * address. (A user network keeps its addresses in its own record, networks.ts.)
 */
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

  allocate(id: string, spec: BridgeSpec, alive: (id: string) => boolean): string {
    return this.withLock((table) => {
      if (table[id]) return table[id];
      for (const [k] of Object.entries(table)) if (!alive(k)) delete table[k];
      const ip = freeAddress(spec.subnet, spec.gateway, Object.values(table));
      if (ip === undefined)
        throw new ManagerError(
          "NETWORK",
          `no free address left in ${formatSubnet(spec.subnet)}; remove some containers`,
        );
      table[id] = ip;
      return ip;
    });
  }

  release(id: string): void {
    this.withLock((table) => {
      delete table[id];
    });
  }
}
