import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";

/** Disk images and request headers shared by the virtio-blk tests (blk, blk_io_thread). */

/**
 * A temporary directory (removed after the test file) and a maker of disk images in it: each
 * `image()` is a new file of `sectors` 512-byte sectors whose sector i is filled with the byte i.
 */
export function diskImages(prefix: string, sectors: number): { dir: string; image: () => string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const image = (): string => {
    const path = join(dir, `disk${n++}.img`);
    const data = new Uint8Array(sectors * 512);
    for (let s = 0; s < sectors; s++) data.fill(s, s * 512, (s + 1) * 512);
    writeFileSync(path, data);
    return path;
  };
  return { dir, image };
}

/** struct virtio_blk_outhdr (virtio 1.2 §5.2.6): le32 type, le32 ioprio (0), le64 sector. */
export function header(type: number, sector: number): Uint8Array {
  const h = new Uint8Array(16);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, type, true);
  dv.setBigUint64(8, BigInt(sector), true);
  return h;
}
