import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import { ManagerError } from "./errors.js";

/**
 * A container's root filesystem: the image's unpacked layers as overlayfs lower directories
 * (topmost first in `lowerdir`, per Documentation/filesystems/overlayfs.rst "Multiple lower
 * layers") and a writable upper directory of its own.
 */

export function isMounted(path: string): boolean {
  try {
    return readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .some((l) => l.split(" ")[4] === path);
  } catch {
    return false;
  }
}

export function mountRootfs(layersLowestFirst: string[], upper: string, work: string, target: string): void {
  for (const d of [upper, work, target]) mkdirSync(d, { recursive: true });
  if (isMounted(target)) return;
  if (layersLowestFirst.length === 0)
    throw new ManagerError(
      "START_FAILED",
      "image has no layers, so there is no root filesystem to run (an image built FROM scratch needs a COPY or ADD step)",
    );
  const lower = [...layersLowestFirst].reverse().join(":");
  const opts = `lowerdir=${lower},upperdir=${upper},workdir=${work}`;
  if (opts.length > 4000) {
    throw new ManagerError(
      "START_FAILED",
      `image has too many layers for one overlay mount (${layersLowestFirst.length})`,
    );
  }
  const r = spawnSync("mount", ["-t", "overlay", "overlay", "-o", opts, target], { encoding: "utf8" });
  if (r.status !== 0) {
    throw new ManagerError(
      "START_FAILED",
      `cannot mount the container's overlay root at ${target}: ${r.error?.message ?? r.stderr.trim()}`,
      {
        target,
      },
    );
  }
}

export function unmount(target: string): void {
  for (let i = 0; i < 5 && isMounted(target); i++) {
    const r = spawnSync("umount", [target], { encoding: "utf8" });
    if (r.status !== 0) spawnSync("umount", ["-l", target]);
  }
}

/** Removes this container's cgroup directories if the runtime left any (v1: one per controller). */
export function removeCgroups(cgroupsPath: string): string[] {
  const left: string[] = [];
  const base = "/sys/fs/cgroup";
  const dirs = existsSync(join(base, "cgroup.controllers"))
    ? [base]
    : readdirSync(base).map((c) => join(base, c));
  for (const d of [...dirs, join(base, "unified")]) {
    const p = join(d, cgroupsPath);
    if (!existsSync(p)) continue;
    try {
      rmdirSync(p);
    } catch {
      left.push(p);
    }
  }
  return left;
}

export function cgroupLeftovers(cgroupsPath: string): string[] {
  const base = "/sys/fs/cgroup";
  let dirs: string[];
  try {
    dirs = existsSync(join(base, "cgroup.controllers"))
      ? [base]
      : readdirSync(base).map((c) => join(base, c));
  } catch {
    return [];
  }
  return dirs.map((d) => join(d, cgroupsPath)).filter((p) => existsSync(p));
}
