import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { withLockFile } from "../../src/container/lock_file.js";

const dir = mkdtempSync(join(tmpdir(), "vessel-lock-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const times = { staleMs: 1_000, timeoutMs: 100, pollMs: 5 };

test("withLockFile holds the lock file while fn runs and removes it after, also when fn throws", () => {
  const lock = join(dir, "a.lock");
  assert.equal(
    withLockFile(
      lock,
      times,
      () => new Error("timeout"),
      () => existsSync(lock),
    ),
    true,
  );
  assert.equal(existsSync(lock), false);
  assert.throws(
    () =>
      withLockFile(
        lock,
        times,
        () => new Error("timeout"),
        () => {
          throw new Error("boom");
        },
      ),
    /boom/,
  );
  assert.equal(existsSync(lock), false);
});

test("withLockFile waits for a held lock, then throws timeout()'s error", () => {
  const lock = join(dir, "b.lock");
  writeFileSync(lock, "");
  const started = Date.now();
  assert.throws(
    () =>
      withLockFile(
        lock,
        times,
        () => new Error("still locked"),
        () => 1,
      ),
    /still locked/,
  );
  assert.ok(Date.now() - started >= times.timeoutMs);
  assert.equal(existsSync(lock), true, "a lock held by someone else is left alone");
});

test("withLockFile takes over a stale lock file (its holder died)", () => {
  const lock = join(dir, "c.lock");
  writeFileSync(lock, "");
  const old = (Date.now() - 5_000) / 1000;
  utimesSync(lock, old, old);
  assert.equal(
    withLockFile(
      lock,
      times,
      () => new Error("timeout"),
      () => 7,
    ),
    7,
  );
  assert.equal(existsSync(lock), false);
});

test("withLockFile reports a lock it cannot create (no such directory) at once, not as a held lock", () => {
  const lock = join(dir, "missing", "d.lock");
  assert.throws(
    () =>
      withLockFile(
        lock,
        { ...times, timeoutMs: 60_000 },
        () => new Error("still locked"),
        () => 1,
      ),
    (err: NodeJS.ErrnoException) => err.code === "ENOENT",
  );
});
