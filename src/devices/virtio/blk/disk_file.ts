/**
 * The host side of a virtio-blk disk: a raw image file (Firecracker's block/io/, crosvm's
 * disk/). Synchronous positional I/O straight between the file and guest memory views, fsync for
 * FLUSH, hole punching (fallocate) for DISCARD and WRITE_ZEROES with a zero-writing fallback.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from "node:fs";
import { SysError } from "../../../sys/sys_error.js";
import { punchHole } from "../../../sys/fallocate.js";
import { VirtioError } from "../virtio_device.js";

export const SECTOR_SIZE = 512;
/** Largest zero buffer the fallback writes at a time. */
const ZERO_CHUNK = 1024 * 1024;

export class DiskFile {
  private closed = false;
  private canPunch = true;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    /** Bytes of the image (the disk's capacity is this rounded down to whole sectors). */
    readonly size: number,
    readonly readOnly: boolean,
  ) {}

  /** Opens a raw image; read-only images are opened O_RDONLY, so the host enforces it too. */
  static open(path: string, readOnly: boolean): DiskFile {
    let fd: number;
    try {
      fd = openSync(path, readOnly ? "r" : "r+");
    } catch (err) {
      throw new VirtioError(
        "BLK_OPEN",
        `cannot open disk image ${JSON.stringify(path)}${readOnly ? "" : " for writing"}: ${(err as Error).message}` +
          (readOnly ? "" : "; pass ,ro to attach it read-only"),
        { path, readOnly },
        err,
      );
    }
    const st = fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) {
      closeSync(fd);
      throw new VirtioError("BLK_NOT_FILE", `disk image ${JSON.stringify(path)} is not a file`, { path });
    }
    return new DiskFile(path, fd, st.size, readOnly);
  }

  /** Capacity in 512-byte sectors (a trailing partial sector is not visible to the guest). */
  get sectors(): number {
    return Math.floor(this.size / SECTOR_SIZE);
  }

  /** Reads into the views from `offset` on; bytes past the end of the file read as zeros. */
  readInto(views: readonly Uint8Array[], offset: number): void {
    for (const v of views) {
      let done = 0;
      while (done < v.length) {
        const n = readSync(this.fd, v, done, v.length - done, offset + done);
        if (n === 0) {
          v.fill(0, done);
          break;
        }
        done += n;
      }
      offset += v.length;
    }
  }

  writeFrom(views: readonly Uint8Array[], offset: number): void {
    for (const v of views) {
      let done = 0;
      while (done < v.length) done += writeSync(this.fd, v, done, v.length - done, offset + done);
      offset += v.length;
    }
  }

  /** Makes written data durable (FLUSH): it survives a crash of Vessel and of the host. */
  flush(): void {
    fsyncSync(this.fd);
  }

  /** Makes [offset, offset+len) read as zeros: a punched hole, or written zeros where holes are unsupported. */
  zeroRange(offset: number, len: number): void {
    if (this.canPunch) {
      try {
        punchHole(this.fd, offset, len);
        return;
      } catch (err) {
        if (!(err instanceof SysError) || (err.errnoName !== "EOPNOTSUPP" && err.errnoName !== "ENOTSUP"))
          throw err;
        this.canPunch = false;
      }
    }
    const zeros = new Uint8Array(Math.min(len, ZERO_CHUNK));
    for (let done = 0; done < len; ) {
      const n = Math.min(zeros.length, len - done);
      done += writeSync(this.fd, zeros, 0, n, offset + done);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}
