import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { importRootfs } from "../image/archive.js";
import { ImageError } from "../image/errors.js";
import type { ImageRecord, ImageStore } from "../image/store.js";
import { writeTreeTar } from "../image/tar_writer.js";

/**
 * Base images made without a registry, from Debian's own packages:
 * - `busybox`: the busybox-static package (apt-get download + dpkg-deb -x), one static binary
 *   and a symlink per applet; tiny and built in about a second.
 * - `debian`: a root filesystem made by debootstrap from Debian's mirror, cached as a tarball
 *   under the user's cache directory so that the slow step runs once per machine.
 */

export function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
  const dir = join(base, "vessel", "images");
  mkdirSync(dir, { recursive: true });
  return dir;
}

export type Progress = (line: string) => void;

function run(cmd: string, args: string[], cwd: string, what: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error || r.status !== 0) {
    throw new ImageError(
      "BASE_IMAGE",
      `${what} failed (${cmd} ${args.join(" ")}): ${r.error?.message ?? r.stderr.trim().split("\n").slice(-5).join("\n")}`,
      { cmd, args, status: r.status },
    );
  }
  return r.stdout;
}

/** Downloads one Debian package into `dir`, running `apt-get update` once if apt has no lists yet. */
export function aptDownload(pkg: string, dir: string): string {
  const tryOnce = () => spawnSync("apt-get", ["download", "-q", pkg], { cwd: dir, encoding: "utf8" });
  let r = tryOnce();
  if (r.status !== 0) {
    spawnSync("apt-get", ["-o", "DPkg::Lock::Timeout=600", "update", "-qq"], { encoding: "utf8" });
    r = tryOnce();
  }
  const deb = readdirSync(dir).find((f) => f.startsWith(`${pkg}_`) && f.endsWith(".deb"));
  if (r.status !== 0 || deb === undefined) {
    throw new ImageError(
      "BASE_IMAGE",
      `apt-get download ${pkg} failed: ${r.error?.message ?? r.stderr.trim()}`,
      { pkg },
    );
  }
  return join(dir, deb);
}

const PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP = "root:x:0:\nnogroup:x:65534:\n";

/** Builds (or rebuilds) the busybox base image from Debian's busybox-static. */
export async function buildBusyboxImage(
  store: ImageStore,
  name = "busybox:latest",
  progress?: Progress,
): Promise<ImageRecord> {
  const cache = cacheDir();
  const tarball = join(cache, "busybox-rootfs.tar");
  if (!existsSync(tarball)) {
    const work = join(cache, `busybox-work-${process.pid}`);
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    try {
      progress?.("downloading busybox-static (apt-get download)");
      const deb = aptDownload("busybox-static", work);
      const x = join(work, "x");
      run("dpkg-deb", ["-x", deb, x], work, "dpkg-deb -x busybox-static");
      const root = join(work, "rootfs");
      for (const d of [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root",
        "tmp",
        "proc",
        "sys",
        "dev",
        "var/www",
        "home",
      ]) {
        mkdirSync(join(root, d), { recursive: true, mode: d === "tmp" ? 0o1777 : 0o755 });
      }
      renameSync(join(x, "bin", "busybox"), join(root, "bin", "busybox"));
      const applets = run(join(root, "bin", "busybox"), ["--list-full"], work, "busybox --list-full")
        .split("\n")
        .filter((l) => l !== "" && l !== "bin/busybox");
      for (const a of applets) {
        if (!existsSync(join(root, a))) symlinkSync("/bin/busybox", join(root, a));
      }
      writeFileSync(join(root, "etc", "passwd"), PASSWD);
      writeFileSync(join(root, "etc", "group"), GROUP);
      writeFileSync(join(root, "etc", "hostname"), "busybox\n");
      spawnSync("chmod", ["1777", join(root, "tmp")]);
      progress?.(`packing ${applets.length} applets`);
      writeTreeTar(root, `${tarball}.tmp`);
      renameSync(`${tarball}.tmp`, tarball);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  return importRootfs(store, tarball, name, { Cmd: ["sh"] }, statSync(tarball).mtime.toISOString());
}

export interface DebianOptions {
  suite?: string;
  variant?: string;
  include?: string[];
  mirror?: string;
}

/** Builds the Debian base image with debootstrap, caching the root filesystem tarball. */
export async function buildDebianImage(
  store: ImageStore,
  name = "debian:bookworm",
  opts: DebianOptions = {},
  progress?: Progress,
): Promise<ImageRecord> {
  const suite = opts.suite ?? "bookworm";
  const variant = opts.variant ?? "minbase";
  const include = opts.include ?? [];
  const key = [suite, variant, ...include].join("-").replace(/[^\w.-]/g, "_");
  const tarball = join(cacheDir(), `debian-${key}.tar`);
  if (!existsSync(tarball)) {
    const work = join(cacheDir(), `debootstrap-${process.pid}`);
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    const mirror = opts.mirror ?? debianMirror();
    const args = [
      `--variant=${variant}`,
      ...(include.length ? [`--include=${include.join(",")}`] : []),
      suite,
      work,
      mirror,
    ];
    progress?.(`debootstrap ${args.join(" ")} (a few minutes; cached afterwards in ${tarball})`);
    const started = Date.now();
    const child = (await import("node:child_process")).spawn("debootstrap", args, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let tail = "";
    const onData = (b: Buffer) => {
      const text = b.toString();
      tail = (tail + text).slice(-4000);
      for (const line of text.split("\n")) {
        const m = /^I: (Retrieving|Validating|Unpacking|Configuring|Extracting|Installing) (.*)$/.exec(line);
        if (m && progress) progress(`[${Math.round((Date.now() - started) / 1000)}s] ${m[1]} ${m[2]}`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const code: number = await new Promise((resolve) => child.on("close", (c) => resolve(c ?? 1)));
    if (code !== 0) {
      rmSync(work, { recursive: true, force: true });
      throw new ImageError("BASE_IMAGE", `debootstrap failed (exit ${code}):\n${tail}`, { args });
    }
    rmSync(join(work, "var", "cache", "apt", "archives"), { recursive: true, force: true });
    mkdirSync(join(work, "var", "cache", "apt", "archives", "partial"), { recursive: true });
    progress?.("packing the root filesystem");
    writeTreeTar(work, `${tarball}.tmp`);
    renameSync(`${tarball}.tmp`, tarball);
    rmSync(work, { recursive: true, force: true });
  }
  return importRootfs(store, tarball, name, { Cmd: ["bash"] }, statSync(tarball).mtime.toISOString());
}

/** The mirror this host's apt uses (first deb line of sources), else Debian's default. */
function debianMirror(): string {
  const r = spawnSync(
    "sh",
    [
      "-c",
      "cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null",
    ],
    {
      encoding: "utf8",
    },
  );
  const deb = /^deb\s+(?:\[[^\]]*\]\s+)?(https?:\/\/\S+)\s+bookworm\s/m.exec(r.stdout);
  if (deb) return deb[1]!;
  const uris = /^URIs:\s*(https?:\/\/\S+)/m.exec(r.stdout);
  if (uris && !uris[1]!.includes("security")) return uris[1]!;
  return "http://deb.debian.org/debian";
}
