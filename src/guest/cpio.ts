/**
 * A writer of "newc" cpio archives, the format the Linux kernel unpacks as an initramfs
 * (linux-doc-6.1 `_sources/driver-api/early-userspace/buffer-format.rst.txt`): per entry a
 * 110-byte ASCII header "070701" + 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime,
 * filesize, devmajor, devminor, rdevmajor, rdevminor, namesize incl. NUL, check), the name and
 * its NUL padded to 4 bytes, the data padded to 4 bytes; closed by the entry "TRAILER!!!".
 * Parent directories are added automatically before their first child, so the kernel can create
 * every path in order. Owners are root and times are `mtime` (default 0) so builds are reproducible.
 */

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const encoder = new TextEncoder();

export class CpioWriter {
  private readonly chunks: Uint8Array[] = [];
  private length = 0;
  private nextIno = 1;
  private readonly seen = new Set<string>();
  private finished = false;

  constructor(private readonly mtime = 0) {}

  /** Adds a directory (and its missing parents). `path` is relative, e.g. "lib/modules". */
  dir(path: string, mode = 0o755): this {
    const p = normalize(path);
    if (p === "" || this.seen.has(p)) return this;
    this.parents(p);
    this.entry(p, S_IFDIR | mode, new Uint8Array(0), 2);
    return this;
  }

  /** Adds a regular file. */
  file(path: string, data: Uint8Array, mode = 0o644): this {
    const p = normalize(path);
    this.parents(p);
    this.entry(p, S_IFREG | mode, data);
    return this;
  }

  /** Adds a symbolic link whose data is the target. */
  symlink(path: string, target: string): this {
    const p = normalize(path);
    this.parents(p);
    this.entry(p, S_IFLNK | 0o777, encoder.encode(target));
    return this;
  }

  /** Adds a character device node (e.g. dev/console 5:1, needed before devtmpfs is mounted). */
  charDevice(path: string, major: number, minor: number, mode = 0o600): this {
    const p = normalize(path);
    this.parents(p);
    this.entry(p, S_IFCHR | mode, new Uint8Array(0), 1, major, minor);
    return this;
  }

  has(path: string): boolean {
    return this.seen.has(normalize(path));
  }

  /** Appends the trailer and returns the archive. */
  finish(): Uint8Array {
    if (!this.finished) {
      this.entry("TRAILER!!!", 0, new Uint8Array(0), 1, 0, 0, 0);
      this.finished = true;
    }
    const out = new Uint8Array(this.length);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }

  private parents(path: string): void {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!this.seen.has(dir)) this.dir(dir);
    }
  }

  private entry(
    name: string,
    mode: number,
    data: Uint8Array,
    nlink = 1,
    rdevMajor = 0,
    rdevMinor = 0,
    ino?: number,
  ): void {
    if (this.finished) throw new Error("cpio archive already finished");
    if (name !== "TRAILER!!!") {
      if (this.seen.has(name)) throw new Error(`cpio: duplicate entry ${name}`);
      this.seen.add(name);
    }
    const nameBytes = encoder.encode(name);
    const fields = [
      ino ?? this.nextIno++,
      mode,
      0, // uid
      0, // gid
      nlink,
      this.mtime,
      data.length,
      0, // devmajor
      0, // devminor
      rdevMajor,
      rdevMinor,
      nameBytes.length + 1,
      0, // check
    ];
    const header = `070701${fields.map((f) => (f >>> 0).toString(16).padStart(8, "0")).join("")}`;
    const headLen = pad4(110 + nameBytes.length + 1);
    const head = new Uint8Array(headLen);
    head.set(encoder.encode(header), 0);
    head.set(nameBytes, 110);
    this.push(head);
    if (data.length > 0) {
      this.push(data);
      const padding = pad4(data.length) - data.length;
      if (padding > 0) this.push(new Uint8Array(padding));
    }
  }

  private push(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}

function normalize(path: string): string {
  return path.replace(/^\/+/, "").replace(/\/+$/, "").replace(/\/+/g, "/");
}
