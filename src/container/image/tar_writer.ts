import {
  closeSync,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  writeSync,
} from "node:fs";
import { createHash, type Hash } from "node:crypto";
import { join } from "node:path";
import { Header, type HeaderData, Pax } from "tar";
import type { Digest } from "./digest.js";

/**
 * Writes tar archives of directory trees: image layers from a directory or from an overlayfs
 * upper directory. The header and PAX encodings are node-tar's (`Header`, `Pax`); the walk is ours
 * because a layer diff needs what no archiver does by itself: overlayfs whiteouts (a 0/0
 * character device, and the `trusted.overlay.opaque` xattr on a directory) become the OCI
 * whiteout files `.wh.<name>` and `.wh..wh..opq` (image-spec layer.md, "Whiteouts").
 *
 * Entries are written in sorted order with a fixed layout, so the same tree gives the same bytes
 * apart from the timestamps it holds.
 */

const BLOCK = 512;
const COPY_CHUNK = 1 << 20;

export interface TreeTarOptions {
  /** Convert overlayfs whiteouts and opaque directories to OCI whiteout entries. */
  overlayWhiteouts?: boolean;
  /** Paths (relative, no leading slash) of directories with the opaque xattr set. */
  opaqueDirs?: ReadonlySet<string>;
  /** Relative paths to leave out (and everything below them). */
  exclude?: ReadonlySet<string>;
}

export class TarFileWriter {
  private readonly fd: number;
  private readonly hash: Hash = createHash("sha256");
  private written = 0;
  private readonly buffer = Buffer.alloc(COPY_CHUNK);

  constructor(path: string) {
    this.fd = openSync(path, "w", 0o600);
  }

  private write(data: Buffer): void {
    let off = 0;
    while (off < data.length) off += writeSync(this.fd, data, off, data.length - off);
    this.hash.update(data);
    this.written += data.length;
  }

  private pad(size: number): void {
    const rem = size % BLOCK;
    if (rem !== 0) this.write(Buffer.alloc(BLOCK - rem));
  }

  /** Writes one header (with a PAX extended header first when the fields do not fit ustar). */
  header(data: HeaderData): void {
    const h = new Header(data);
    if (h.encode()) {
      const pax = new Pax({
        path: data.path,
        linkpath: data.linkpath,
        size: data.size,
        uid: data.uid,
        gid: data.gid,
        mtime: data.mtime,
      } as HeaderData).encode();
      this.write(pax);
    }
    this.write(h.block!);
  }

  /** A regular file with the given bytes. */
  bytes(data: HeaderData, content: Buffer): void {
    this.header({ ...data, type: "File", size: content.length });
    this.write(content);
    this.pad(content.length);
  }

  /** A regular file copied from disk (streamed in chunks). */
  file(data: HeaderData, srcPath: string): void {
    const src = openSync(srcPath, "r");
    try {
      const size = fstatSync(src).size;
      this.header({ ...data, type: "File", size });
      let left = size;
      while (left > 0) {
        const n = readSync(src, this.buffer, 0, Math.min(COPY_CHUNK, left), null);
        if (n <= 0) break;
        this.write(this.buffer.subarray(0, n));
        left -= n;
      }
      if (left > 0) this.write(Buffer.alloc(left)); // file shrank while reading: keep the archive valid
      this.pad(size);
    } finally {
      closeSync(src);
    }
  }

  /** Every entry under `root`, paths relative to it, sorted. */
  tree(root: string, opts: TreeTarOptions = {}): void {
    const links = new Map<string, string>();
    const walk = (rel: string): void => {
      const names = readdirSync(rel === "" ? root : join(root, rel)).sort();
      for (const name of names) {
        const relPath = rel === "" ? name : `${rel}/${name}`;
        if (opts.exclude?.has(relPath)) continue;
        const abs = join(root, relPath);
        const st = lstatSync(abs);
        const base: HeaderData = {
          path: relPath,
          mode: st.mode & 0o7777,
          uid: st.uid,
          gid: st.gid,
          mtime: st.mtime,
        };
        if (st.isCharacterDevice() && st.rdev === 0 && opts.overlayWhiteouts) {
          this.bytes(
            { ...base, path: rel === "" ? `.wh.${name}` : `${rel}/.wh.${name}`, mode: 0o644 },
            Buffer.alloc(0),
          );
        } else if (st.isDirectory()) {
          this.header({ ...base, path: `${relPath}/`, type: "Directory", size: 0 });
          if (opts.overlayWhiteouts && opts.opaqueDirs?.has(relPath)) {
            this.bytes({ ...base, path: `${relPath}/.wh..wh..opq`, mode: 0o644 }, Buffer.alloc(0));
          }
          walk(relPath);
        } else if (st.isSymbolicLink()) {
          this.header({ ...base, type: "SymbolicLink", linkpath: readlinkSync(abs), size: 0 });
        } else if (st.isFile()) {
          const key = `${st.dev}:${st.ino}`;
          const first = st.nlink > 1 ? links.get(key) : undefined;
          if (first !== undefined) {
            this.header({ ...base, type: "Link", linkpath: first, size: 0 });
          } else {
            if (st.nlink > 1) links.set(key, relPath);
            this.file(base, abs);
          }
        } else if (st.isCharacterDevice() || st.isBlockDevice()) {
          this.header({
            ...base,
            type: st.isCharacterDevice() ? "CharacterDevice" : "BlockDevice",
            size: 0,
            devmaj: Math.floor(st.rdev / 256) & 0xfff,
            devmin: (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00),
          });
        } else if (st.isFIFO()) {
          this.header({ ...base, type: "FIFO", size: 0 });
        }
        // sockets are not archivable; tar tools skip them too
      }
    };
    walk("");
  }

  /** Ends the archive (two zero blocks) and returns its digest and size. */
  finish(): { digest: Digest; size: number } {
    this.write(Buffer.alloc(BLOCK * 2));
    closeSync(this.fd);
    return { digest: `sha256:${this.hash.digest("hex")}`, size: this.written };
  }

  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

/** Archives `root` into `outPath`; returns the archive's digest and size. */
export function writeTreeTar(
  root: string,
  outPath: string,
  opts: TreeTarOptions = {},
): { digest: Digest; size: number } {
  const w = new TarFileWriter(outPath);
  try {
    w.tree(root, opts);
    return w.finish();
  } catch (err) {
    w.abort();
    throw err;
  }
}
