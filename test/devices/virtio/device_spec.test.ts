import assert from "node:assert/strict";
import { test } from "node:test";
import { parseDiskFlag, parseNetFlag, parseVsockFlag } from "../../../src/devices/virtio/device_spec.js";

test("--disk parses a path with ro and serial options", () => {
  assert.deepEqual(parseDiskFlag("/img/root.ext4"), { kind: "blk", path: "/img/root.ext4" });
  assert.deepEqual(parseDiskFlag("d.img,ro,serial=data1"), {
    kind: "blk",
    path: "d.img",
    readOnly: true,
    serial: "data1",
  });
  assert.throws(() => parseDiskFlag(",ro"), /needs an image path/);
  assert.throws(() => parseDiskFlag("d.img,rw"), /unknown option "rw"/);
  assert.throws(() => parseDiskFlag("d.img,serial=123456789012345678901"), /at most 20 bytes/);
});

test("--net parses the tap backend and its options", () => {
  assert.deepEqual(parseNetFlag("tap"), { kind: "net", tap: "vessel%d" });
  assert.deepEqual(parseNetFlag("tap,name=vm0,mac=52:54:00:00:00:01,host-ip=10.0.2.1/24"), {
    kind: "net",
    tap: "vm0",
    mac: "52:54:00:00:00:01",
    hostAddress: "10.0.2.1/24",
  });
  assert.throws(() => parseNetFlag("user"), /only network backend is "tap"/);
  assert.throws(() => parseNetFlag("tap,mac=zz"), /is not like/);
  assert.throws(() => parseNetFlag("tap,host-ip=10.0.2.1/24,bridge=br0"), /either host-ip or bridge/);
});

test("--vsock parses cid and uds", () => {
  assert.deepEqual(parseVsockFlag("cid=3,uds=/tmp/v.sock"), {
    kind: "vsock",
    cid: 3,
    udsPath: "/tmp/v.sock",
  });
  assert.throws(() => parseVsockFlag("cid=2,uds=/tmp/v.sock"), /3 or more/);
  assert.throws(() => parseVsockFlag("cid=3"), /uds=PATH/);
});
