import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { withLockFile } from "../lock_file.js";
import { ManagerError } from "../manager/errors.js";
import type { BridgeSpec } from "./bridge.js";
import { formatSubnet, freeAddress } from "./subnet.js";

/**
 * The default network's address allocator. The default bridge is one per host, whichever Vessel
 * root its containers belong to, so its table is too: `/run/vessel/ipam-<bridge>.json` maps a
 * container's state directory (root and id in one) to its address. /run is emptied at boot, as
 * the bridge is. An entry whose directory has no container.json any more is reclaimed. (A user
 * network keeps its addresses in its own record, networks.ts.)
 */
export class Ipam {
  private readonly file: string;
  private readonly lock: string;

  constructor(
    private readonly spec: BridgeSpec,
    dir: string = process.env.VESSEL_IPAM_DIR ?? "/run/vessel",
  ) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, `ipam-${spec.bridge}.json`);
    this.lock = join(dir, `ipam-${spec.bridge}.lock`);
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

  /** The address of the container whose state directory is `containerDir`, given once. */
  allocate(containerDir: string): string {
    return this.withLock((table) => {
      if (table[containerDir]) return table[containerDir];
      for (const k of Object.keys(table)) if (!existsSync(join(k, "container.json"))) delete table[k];
      const ip = freeAddress(this.spec.subnet, this.spec.gateway, Object.values(table));
      if (ip === undefined)
        throw new ManagerError(
          "NETWORK",
          `no free address left in ${formatSubnet(this.spec.subnet)} (the default bridge ${this.spec.bridge}); remove some containers or put some on a network of their own (vessel network create)`,
        );
      table[containerDir] = ip;
      return ip;
    });
  }

  release(containerDir: string): void {
    this.withLock((table) => {
      delete table[containerDir];
    });
  }
}
