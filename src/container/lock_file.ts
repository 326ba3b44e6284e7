import { closeSync, openSync, rmSync, statSync, unlinkSync } from "node:fs";

/** How long to wait for a lock file, and when one is taken to be left by a process that died. */
export interface LockFileTimes {
  /** A lock file older than this is removed (its holder is gone: no holder keeps one that long). */
  staleMs: number;
  /** Waiting longer than this gives up with `timeout()`'s error. */
  timeoutMs: number;
  /** Pause between attempts. */
  pollMs: number;
}

/**
 * Runs `fn` holding the lock file `path` (created with O_EXCL, removed after `fn`), between the
 * processes that share a Vessel root (the image store, the bridge's address allocator).
 */
export function withLockFile<T>(path: string, times: LockFileTimes, timeout: () => Error, fn: () => T): T {
  const start = Date.now();
  for (;;) {
    try {
      closeSync(openSync(path, "wx"));
      break;
    } catch (err) {
      // only an existing lock is waited for; a missing directory or a permission is reported now
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      try {
        if (Date.now() - statSync(path).mtimeMs > times.staleMs) unlinkSync(path);
      } catch {
        // gone already
      }
      if (Date.now() - start > times.timeoutMs) throw timeout();
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, times.pollMs);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(path, { force: true });
  }
}
