import assert from "node:assert/strict";
import { test } from "node:test";
import { DetachKeyMatcher, parseDetachKeys } from "../../../src/container/manager/detach_keys.js";

test("detach keys: docker's default ctrl-p,ctrl-q is 0x10 0x11", () => {
  assert.deepEqual([...parseDetachKeys("ctrl-p,ctrl-q")], [0x10, 0x11]);
});

test("detach keys: single characters, ctrl- letters in either case and ctrl- punctuation", () => {
  assert.deepEqual([...parseDetachKeys("ctrl-a,x")], [0x01, 0x78]);
  assert.deepEqual([...parseDetachKeys("CTRL-Z,ctrl-@")], [0x1a, 0x00]);
  assert.deepEqual(
    [...parseDetachKeys("ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_")],
    [0x1b, 0x1c, 0x1d, 0x1e, 0x1f],
  );
});

test("detach keys: a string that cannot be parsed is a usage error quoting it and the syntax", () => {
  for (const bad of ["ctrl-", "ctrl-1", "ab", "ctrl-p,,x", "", "alt-x", "ctrl-é", ","]) {
    assert.throws(
      () => parseDetachKeys(bad),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, "BAD_DETACH_KEYS");
        assert.ok(err.message.includes(`"${bad}"`), err.message);
        assert.match(err.message, /ctrl-<value>/);
        return true;
      },
      bad,
    );
  }
});

test("detach key matcher: the whole sequence detaches and is not passed on", () => {
  const m = new DetachKeyMatcher(Buffer.from([0x10, 0x11]));
  assert.deepEqual(m.feed(Buffer.from("ls\r")), { forward: Buffer.from("ls\r"), detached: false });
  const r = m.feed(Buffer.from([0x61, 0x10, 0x11, 0x62]));
  assert.equal(r.detached, true);
  assert.deepEqual(r.forward, Buffer.from("a"));
});

test("detach key matcher: a sequence split across reads still detaches", () => {
  const m = new DetachKeyMatcher(Buffer.from([0x10, 0x11]));
  assert.deepEqual(m.feed(Buffer.from([0x10])), { forward: Buffer.alloc(0), detached: false });
  assert.equal(m.feed(Buffer.from([0x11])).detached, true);
});

test("detach key matcher: a broken partial match is passed on to the container", () => {
  const m = new DetachKeyMatcher(Buffer.from([0x10, 0x11]));
  assert.deepEqual(m.feed(Buffer.from([0x10, 0x61])), {
    forward: Buffer.from([0x10, 0x61]),
    detached: false,
  });
  // ctrl-p ctrl-p ctrl-q: the first ctrl-p is the container's, the next two detach
  const r = m.feed(Buffer.from([0x10, 0x10, 0x11]));
  assert.equal(r.detached, true);
  assert.deepEqual(r.forward, Buffer.from([0x10]));
});
