import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { posix } from "node:path";
import type { ReadEntry } from "tar";
import { ImageError } from "./errors.js";

/**
 * Layers on disk. A layer tar (image-spec layer.md) is unpacked once into its own directory, in
 * the form overlayfs reads as a lower directory: an OCI whiteout `.wh.<name>` becomes a 0/0
 * character device `<name>`, and `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on
 * its directory (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories").
 * Stacking the layers is then one overlay mount; nothing is copied per container.
 */

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";

export interface UnpackResult {
  entries: number;
  whiteouts: string[];
  opaque: string[];
}

/** Normalises a member path: no leading "/" or "./", no "..": null when it must be refused. */
export function safeMemberPath(p: string): string | null {
  const norm = posix.normalize(`/${p}`).slice(1).replace(/\/$/, "");
  if (norm.split("/").includes("..")) return null;
  return norm;
}

/**
 * Unpacks `tarPath` (plain or gzip) into the empty directory `dest`. Paths that climb out with
 * `..`, and entries that would be written through a symlink the same archive created, are
 * refused (node-tar's own checks are off because they resolve absolute symlink targets against
 * the host's root, which breaks ordinary root filesystems such as Debian's merged /usr).
 */
export async function unpackLayer(tarPath: string, dest: string): Promise<UnpackResult> {
  mkdirSync(dest, { recursive: true });
  // an empty layer (a RUN step that changed nothing) is just the two zero end blocks, which
  // node-tar calls an unrecognised format
  const st = statSync(tarPath);
  if (st.size <= 10240 && readFileSync(tarPath).every((b) => b === 0))
    return { entries: 0, whiteouts: [], opaque: [] };
  const symlinks = new Set<string>();
  const whiteouts: string[] = [];
  const opaque: string[] = [];
  const refused: string[] = [];
  let entries = 0;
  const throughSymlink = (p: string): boolean => {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) if (symlinks.has(parts.slice(0, i).join("/"))) return true;
    return false;
  };
  // loaded here, not at the top: node-tar costs ~40 ms of start-up that `run` does not need
  const tar = await import("tar");
  try {
    await tar.x({
      file: tarPath,
      cwd: dest,
      preservePaths: true,
      preserveOwner: true,
      chmod: true,
      filter: (path, entry) => {
        const rel = safeMemberPath(path);
        if (rel === null || rel === "" || throughSymlink(rel)) {
          if (rel !== "") refused.push(path);
          return false;
        }
        const e = entry as ReadEntry;
        if (e.type === "Link") {
          const target = safeMemberPath(String(e.linkpath ?? ""));
          if (target === null || throughSymlink(target)) {
            refused.push(path);
            return false;
          }
          e.linkpath = target;
        }
        const base = posix.basename(rel);
        const dir = posix.dirname(rel);
        if (base === OPAQUE_MARKER) {
          opaque.push(dir === "." ? "" : dir);
          return false;
        }
        if (base.startsWith(WHITEOUT_PREFIX)) {
          whiteouts.push(dir === "." ? base.slice(4) : `${dir}/${base.slice(4)}`);
          return false;
        }
        if (e.type === "SymbolicLink") symlinks.add(rel);
        else symlinks.delete(rel);
        e.path = rel;
        entries++;
        return true;
      },
      onwarn: (code, message) => {
        if (code === "TAR_ENTRY_UNSUPPORTED") return; // device nodes: the runtime makes /dev
        if (code === "TAR_ENTRY_INFO") return;
        refused.push(`${code}: ${message}`);
      },
    });
  } catch (err) {
    throw new ImageError(
      "BAD_ARCHIVE",
      `cannot unpack layer ${tarPath}: ${(err as Error).message}`,
      { tarPath },
      err,
    );
  }
  if (refused.length > 0 && process.env.VESSEL_DEBUG) {
    process.stderr.write(
      `vessel: refused ${refused.length} unsafe entries in ${tarPath}: ${refused.slice(0, 5).join(", ")}\n`,
    );
  }
  if (whiteouts.length > 0) {
    const r = spawnSync("sh", ["-c", 'for f; do mknod -- "$f" c 0 0 || exit 1; done', "sh", ...whiteouts], {
      cwd: dest,
      encoding: "utf8",
    });
    if (r.status !== 0)
      throw new ImageError("BAD_ARCHIVE", `cannot create whiteouts in ${dest}: ${r.stderr}`, { dest });
  }
  if (opaque.length > 0) {
    const dirs = opaque.map((d) => (d === "" ? "." : d));
    for (const d of dirs) mkdirSync(`${dest}/${d}`, { recursive: true });
    const r = spawnSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", "--", ...dirs], {
      cwd: dest,
      encoding: "utf8",
    });
    if (r.status !== 0) {
      throw new ImageError(
        "BAD_ARCHIVE",
        `cannot mark opaque directories in ${dest}: ${r.error?.message ?? r.stderr} (setfattr comes from the "attr" package)`,
        { dest },
      );
    }
  }
  return { entries, whiteouts, opaque };
}

/** Directories under `root` carrying trusted.overlay.opaque=y, relative to root. */
export function findOpaqueDirs(root: string): Set<string> {
  const r = spawnSync("getfattr", ["-R", "-P", "--absolute-names", "-n", "trusted.overlay.opaque", root], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  const out = new Set<string>();
  if (r.error)
    throw new ImageError("BAD_ARCHIVE", `getfattr failed: ${r.error.message} (install the "attr" package)`);
  let current: string | null = null;
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("# file: ")) current = line.slice(8);
    else if (current !== null && line.startsWith("trusted.overlay.opaque=")) {
      const rel = current === root ? "" : current.slice(root.length + 1);
      if (line.includes('"y"')) out.add(rel);
    }
  }
  return out;
}
