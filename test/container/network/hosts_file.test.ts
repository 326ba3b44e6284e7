import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { renderHosts, writeInPlace } from "../../../src/container/network/hosts_file.js";

test("a user network's hosts file names the container, then its peers by address order", () => {
  const text = renderHosts({ ip: "10.122.0.3", names: ["abc123", "web", "abc123"] }, [
    { ip: "10.122.0.10", names: ["cache"] },
    { ip: "10.122.0.2", names: ["db", "0123456789ab", "database"] },
  ]);
  assert.equal(
    text,
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.122.0.3\tabc123 web\n" +
      "# peers on this network (kept up to date by vessel)\n" +
      "10.122.0.2\tdb 0123456789ab database\n10.122.0.10\tcache\n",
  );
  assert.match(renderHosts({ hostname: "box" }), /\n127\.0\.1\.1\tbox\n$/);
});

test("writeInPlace keeps the inode (the container's bind mount) and shrinks the file", () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-hosts-"));
  try {
    const path = join(dir, "hosts");
    writeFileSync(path, "a much longer first version of the file\n");
    const ino = statSync(path).ino;
    writeInPlace(path, "short\n");
    assert.equal(readFileSync(path, "utf8"), "short\n");
    assert.equal(statSync(path).ino, ino);
    writeInPlace(join(dir, "new"), "made\n");
    assert.equal(readFileSync(join(dir, "new"), "utf8"), "made\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
