import assert from "node:assert/strict";
import { test } from "node:test";
import {
  close,
  eventfd,
  eventfdRead,
  eventfdSignal,
  ioctlInt,
  O_RDONLY,
  open,
  POLLIN,
  poll,
} from "../../src/sys/libc.js";
import { mapAnonymous, unmap, viewHostMemory } from "../../src/sys/mman.js";
import { SysError } from "../../src/sys/sys_error.js";

test("a failed ioctl throws SysError naming the call and the errno", () => {
  assert.throws(
    () => ioctlInt(-1, 0xae01, 0, "KVM_CREATE_VM"),
    (err: unknown) =>
      err instanceof SysError &&
      err.syscall === "ioctl(KVM_CREATE_VM)" &&
      err.errnoName === "EBADF" &&
      err.code === "SYS_EBADF" &&
      /ioctl\(KVM_CREATE_VM\) failed: EBADF/.test(err.message),
  );
});

test("open of a missing path reports ENOENT with the path", () => {
  assert.throws(() => open("/nonexistent/vessel", O_RDONLY), /open\(\/nonexistent\/vessel\) failed: ENOENT/);
});

test("anonymous host memory is zeroed and viewable through its address", () => {
  const addr = mapAnonymous(1 << 16);
  const a = new Uint8Array(viewHostMemory(addr, 1 << 16));
  assert.equal(a[1234], 0);
  a[1234] = 0x5a;
  const b = new Uint8Array(viewHostMemory(addr, 1 << 16));
  assert.equal(b[1234], 0x5a);
  unmap(addr, 1 << 16);
});

test("eventfd counts signals and poll sees it readable", () => {
  const fd = eventfd(0);
  assert.deepEqual(poll([{ fd, events: POLLIN }], 0), [0]);
  eventfdSignal(fd, 2n);
  eventfdSignal(fd);
  assert.deepEqual(poll([{ fd, events: POLLIN }], 0), [POLLIN]);
  assert.equal(eventfdRead(fd), 3n);
  close(fd);
});
