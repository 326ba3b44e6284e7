/**
 * fallocate(2) for raw disk images: punching holes serves virtio-blk DISCARD and WRITE_ZEROES
 * (a punched range reads back as zeros and frees the host blocks). Node's fs has no fallocate.
 */
import koffi from "koffi";
import { SysError } from "./sys_error.js";

const libc = koffi.load("libc.so.6");
const fallocateC = libc.func("int fallocate(int fd, int mode, int64_t offset, int64_t len)");

/** linux/falloc.h */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * Deallocates [offset, offset+len) of the file at `fd`, keeping its size: the range reads as zeros.
 * Throws SysError (code "SYS_EOPNOTSUPP" on file systems without hole punching).
 */
export function punchHole(fd: number, offset: number, len: number): void {
  const ret = fallocateC(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len) as number;
  if (ret < 0) throw new SysError(`fallocate(PUNCH_HOLE, ${offset}, ${len})`, koffi.errno());
}
