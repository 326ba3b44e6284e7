import assert from "node:assert/strict";
import { test } from "node:test";
import { parseMemSize } from "../../src/vm/config.js";
import { ConsoleEscape } from "../../src/vm/console_escape.js";
import { ConsoleRing } from "../../src/vm/console_ring.js";

const bytes = (s: string) => new TextEncoder().encode(s);

test("console escape: Ctrl-A x quits, Ctrl-A a sends Ctrl-A, other bytes pass", () => {
  const e = new ConsoleEscape();
  assert.deepEqual(e.feed(bytes("ls\r")), {
    forward: bytes("ls\r"),
    quit: false,
    help: false,
    togglePause: false,
  });
  assert.deepEqual(e.feed(Uint8Array.of(1, 0x61, 0x62)), {
    forward: Uint8Array.of(1, 0x62),
    quit: false,
    help: false,
    togglePause: false,
  });
  assert.deepEqual(e.feed(Uint8Array.of(0x63, 1)), {
    forward: Uint8Array.of(0x63),
    quit: false,
    help: false,
    togglePause: false,
  });
  // the escape may straddle two reads
  assert.deepEqual(e.feed(Uint8Array.of(0x78)), {
    forward: new Uint8Array(0),
    quit: true,
    help: false,
    togglePause: false,
  });
  assert.equal(new ConsoleEscape().feed(Uint8Array.of(1, 0x68)).help, true);
  assert.equal(new ConsoleEscape().feed(Uint8Array.of(1, 0x70)).togglePause, true);
  assert.deepEqual(new ConsoleEscape().feed(Uint8Array.of(1, 0x7a)).forward, Uint8Array.of(1, 0x7a));
});

test("console ring carries bytes in order, bounded by its capacity, across wrap-around", () => {
  const r = new ConsoleRing(new SharedArrayBuffer(8 + 16));
  assert.equal(r.write(bytes("0123456789")), 10);
  assert.deepEqual(r.read(4), bytes("0123"));
  assert.equal(r.write(bytes("abcdefghijkl")), 10); // 6 left in the ring + 10 = 16
  assert.equal(r.available(), 16);
  assert.deepEqual(r.read(100), bytes("456789abcdefghij"));
  assert.equal(r.available(), 0);
  // a second view on the same buffer (another thread) sees the same state
  const other = new ConsoleRing(r.buffer);
  r.write(bytes("z"));
  assert.deepEqual(other.read(1), bytes("z"));
});

test("memory sizes: suffixes, MiB by default, and clear refusals", () => {
  assert.equal(parseMemSize("256M"), 256 << 20);
  assert.equal(parseMemSize("1G"), 1 << 30);
  assert.equal(parseMemSize("512"), 512 << 20);
  assert.equal(parseMemSize("65536k"), 64 << 20);
  assert.throws(() => parseMemSize("16M"), /too small/);
  assert.throws(() => parseMemSize("12 parsecs"), /is not a size/);
});
