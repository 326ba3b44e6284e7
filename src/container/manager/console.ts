import { closeSync, read, rmSync, writeSync } from "node:fs";
import { recvFd } from "../../sys/fd_passing.js";
import { ioctlPtr } from "../../sys/libc.js";
import { acceptUnix, closeSocket, listenUnix } from "../../sys/unix_socket.js";

/** asm-generic/ioctls.h */
const TIOCSWINSZ = 0x5414;

/**
 * The terminal of an attached `-t` container (what docker and podman do): the runtime allocates a
 * pty inside the container and sends its master to a console socket (runc's --console-socket
 * contract); the manager receives the master, puts the caller's terminal in raw mode when stdin
 * is one, and copies bytes both ways, keeping the pty's size equal to the caller's terminal.
 */
export class ConsoleSocket {
  private fd: number;

  private constructor(
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  /** Listens at `path` (removed first if a stale one is there). */
  static listen(path: string): ConsoleSocket {
    rmSync(path, { force: true });
    return new ConsoleSocket(path, listenUnix(path, 1));
  }

  /**
   * Waits for the runtime to send the pty master; undefined if `gone` settles first (the
   * container failed before its terminal was set up).
   */
  async receive(gone: Promise<unknown>): Promise<number | undefined> {
    let over = false;
    void gone.then(
      () => (over = true),
      () => (over = true),
    );
    let conn = -1;
    try {
      for (;;) {
        if (conn < 0 && this.fd >= 0) conn = acceptUnix(this.fd);
        if (conn >= 0) {
          const m = recvFd(conn);
          if (m !== undefined) return m.fd >= 0 ? m.fd : undefined;
        }
        if (over) return undefined;
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      if (conn >= 0) closeSocket(conn);
      this.close();
    }
  }

  close(): void {
    if (this.fd >= 0) closeSocket(this.fd);
    this.fd = -1;
    rmSync(this.path, { force: true });
  }
}

/** Sets the pty's window size (rows, columns), as the caller's terminal has it. */
export function setWindowSize(master: number, rows: number, columns: number): void {
  const ws = new Uint8Array(8);
  const v = new DataView(ws.buffer);
  v.setUint16(0, rows, true);
  v.setUint16(2, columns, true);
  ioctlPtr(master, TIOCSWINSZ, ws, "TIOCSWINSZ");
}

/** The caller's terminal size, if stdout is a terminal. */
export function callerWindowSize(): { height: number; width: number } | undefined {
  const out = process.stdout;
  return out.isTTY && out.rows > 0 && out.columns > 0 ? { height: out.rows, width: out.columns } : undefined;
}

/**
 * Copies the pty master's output to this process's stdout and (with `input`) this process's stdin
 * to the master, until the container's side of the pty is closed. Resolves once all output is
 * written; the caller's terminal mode is restored and the master closed by then.
 */
export function proxyConsole(master: number, opts: { input: boolean }): Promise<void> {
  const stdin = process.stdin;
  const raw = opts.input && stdin.isTTY === true;
  const onInput = (b: Buffer) => {
    try {
      writeSync(master, b);
    } catch {
      // the container closed its terminal
    }
  };
  const onResize = () => {
    const size = callerWindowSize();
    if (size === undefined) return;
    try {
      setWindowSize(master, size.height, size.width);
    } catch {
      // closed
    }
  };
  if (raw) stdin.setRawMode(true);
  if (opts.input) {
    stdin.on("data", onInput);
    stdin.resume();
  }
  if (process.stdout.isTTY) process.stdout.on("resize", onResize);
  return new Promise<void>((resolve) => {
    const buf = Buffer.alloc(65536);
    const finish = () => {
      if (opts.input) {
        stdin.off("data", onInput);
        stdin.pause();
      }
      if (raw) stdin.setRawMode(false);
      process.stdout.off("resize", onResize);
      try {
        closeSync(master);
      } catch {
        // already closed
      }
      resolve();
    };
    // A blocking read on the thread pool: once every slave descriptor is closed (the container
    // is gone) the master reads EIO after its buffered output, which ends the copy.
    const pump = () => {
      read(master, buf, 0, buf.length, null, (err, n) => {
        if (err || n === 0) return finish();
        process.stdout.write(Buffer.from(buf.subarray(0, n)), () => undefined);
        pump();
      });
    };
    pump();
  });
}
