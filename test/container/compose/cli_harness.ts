import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { Manager } from "../../../src/container/manager/manager.js";
import { REPO } from "../fixtures.js";

/**
 * What the build and compose end-to-end tests share: the `vessel` CLI run as a user types it in
 * a private VESSEL_ROOT, the reason to skip on a host that cannot run containers, the busybox
 * base image, and a clean-up that removes every container, network and mount the test made
 * whichever test failed.
 */

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Harness {
  root: string;
  env: NodeJS.ProcessEnv;
  skipReason: string | undefined;
  vessel(args: string[], opts?: { timeoutMs?: number; cwd?: string }): Promise<Result>;
  ok(args: string[], opts?: { timeoutMs?: number; cwd?: string }): Promise<string>;
  /** Makes the busybox image (from Debian's busybox-static, cached); the reason when it cannot. */
  prepareBase(): Promise<string | undefined>;
  cleanup(): Promise<void>;
}

function hostMissing(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (namespaces, overlayfs, cgroups, iptables)";
  for (const tool of ["ip", "iptables", "mount"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  const probe = mkdtempSync(join(tmpdir(), "vessel-ovl-"));
  for (const d of ["l", "u", "w", "m"]) mkdirSync(join(probe, d));
  const opts = `lowerdir=${probe}/l,upperdir=${probe}/u,workdir=${probe}/w`;
  const ok = spawnSync("mount", ["-t", "overlay", "overlay", "-o", opts, `${probe}/m`]).status === 0;
  if (ok) spawnSync("umount", [`${probe}/m`]);
  rmSync(probe, { recursive: true, force: true });
  return ok ? undefined : "overlayfs mounts fail on this host";
}

export function harness(prefix: string): Harness {
  const CLI = join(REPO, "bin/vessel.js");
  const root = mkdtempSync(join(tmpdir(), `vessel-${prefix}-`));
  const env = { ...process.env, VESSEL_ROOT: root };
  const vessel = (args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<Result> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args], {
        env,
        stdio: ["ignore", "pipe", "pipe"],
        ...(opts.cwd ? { cwd: opts.cwd } : {}),
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
      child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
      const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  const h: Harness = {
    root,
    env,
    skipReason: hostMissing(),
    vessel,
    async ok(args, opts) {
      const r = await vessel(args, opts);
      assert.equal(r.code, 0, `vessel ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
      return r.stdout;
    },
    async prepareBase() {
      if (h.skipReason) return h.skipReason;
      const r = await vessel(["image", "build", "--base", "busybox"], { timeoutMs: 180_000 });
      return r.code === 0
        ? undefined
        : `cannot make the busybox base image (apt-get download busybox-static): ${r.stderr.trim()}`;
    },
    async cleanup() {
      if (!h.skipReason) {
        const m = new Manager(root);
        for (const v of m.list(true)) await m.remove(v.config.id, true).catch(() => undefined);
        for (const n of m.networks.list()) {
          try {
            m.networks.remove(n.name);
          } catch {
            // in use by a container that would not go: reported by the test that made it
          }
        }
      }
      // anything still mounted below the root (a build step's or a container's overlay)
      for (const p of mountsBelow(root).sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", p]);
      rmSync(root, { recursive: true, force: true });
    },
  };
  return h;
}

/**
 * A harness for one test file: the busybox image made before its tests, everything cleaned up
 * after them. `need(t)` skips a test, with the reason, when the host or the base image is missing.
 */
export function e2eSuite(prefix: string): Harness & { need(t: { skip(reason: string): void }): boolean } {
  const h = harness(prefix);
  let missing: string | undefined = "the base image was not made";
  before(async () => {
    missing = await h.prepareBase();
  });
  after(() => h.cleanup());
  return Object.assign(h, {
    need(t: { skip(reason: string): void }): boolean {
      if (missing) t.skip(missing);
      return missing === undefined;
    },
  });
}

/** Retries `fn` until it stops throwing, for at most `ms`. */
export async function eventually<T>(fn: () => T | Promise<T>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** A TCP port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Mount points below `dir` (what a failed step must not leave behind). */
export function mountsBelow(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p.startsWith(`${dir}/`));
}
