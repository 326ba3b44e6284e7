import assert from "node:assert/strict";
import { test } from "node:test";
import { compileDeviceFilter, encodeEbpf, runDeviceFilter } from "../../src/container/device_filter.js";

test("device filter: deny all, then allow named devices; nothing else gets through", () => {
  const prog = compileDeviceFilter([
    { allow: false, access: "rwm" },
    { allow: true, type: "c", major: 1, minor: 3, access: "rwm" },
    { allow: true, type: "c", major: 136, minor: null, access: "rw" },
  ]);
  assert.equal(runDeviceFilter(prog, "c", "rw", 1, 3), 1, "/dev/null");
  assert.equal(runDeviceFilter(prog, "c", "r", 136, 7), 1, "any pty slave");
  assert.equal(runDeviceFilter(prog, "c", "m", 136, 7), 0, "but no mknod of one");
  assert.equal(runDeviceFilter(prog, "b", "r", 1, 3), 0, "a block device with the same numbers");
  assert.equal(runDeviceFilter(prog, "c", "r", 10, 200), 0, "/dev/net/tun");
});

test("device filter: later rules win, as with devices.allow/deny on v1", () => {
  const prog = compileDeviceFilter([
    { allow: true, type: "c", major: 10, minor: 200, access: "rw" },
    { allow: false, type: "c", major: 10, minor: 200, access: "w" },
  ]);
  assert.equal(runDeviceFilter(prog, "c", "r", 10, 200), 1);
  assert.equal(runDeviceFilter(prog, "c", "rw", 10, 200), 0, "any denied access denies");
  assert.equal(runDeviceFilter(prog, "c", "r", 10, 201), 0, "default deny");
});

test("device filter: a rule matching everything ends the program (no unreachable code)", () => {
  const prog = compileDeviceFilter([
    { allow: true, type: "c", major: 1, minor: 3 },
    { allow: true, access: "rwm" },
  ]);
  assert.equal(runDeviceFilter(prog, "b", "rwm", 8, 0), 1);
  assert.equal(prog.at(-1)!.code, 0x95, "ends in exit");
  assert.equal(
    prog.filter((i) => i.code === 0x95).length,
    1,
    "the earlier rule is never reached, so not emitted",
  );
  assert.equal(encodeEbpf(prog).length, prog.length * 8);
});
