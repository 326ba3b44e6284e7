import { closeSync, read, rmSync, writeSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { callerWindowSize, setWindowSize } from "./console.js";
import { DetachKeyMatcher } from "./detach_keys.js";
import { ManagerError } from "./errors.js";

/**
 * The terminal of a detached `-t` container (docker's attach): its monitor keeps the pty master,
 * writes what the container prints to the log, and serves an attach socket; `vessel container
 * attach` connects the caller's terminal to it until the detach keys are typed or the container
 * exits.
 *
 * The attach socket speaks frames of [type u8][length u32 BE][payload]:
 *   client -> monitor: INPUT (typed bytes), RESIZE (rows u16 BE, columns u16 BE);
 *   monitor -> client: OUTPUT (the pty's bytes), EXIT (the container's exit status, i32 BE),
 *   after which the monitor closes the connection.
 */

const enum Frame {
  Input = 0,
  Resize = 1,
  Output = 2,
  Exit = 3,
}

/** Where a container's monitor serves its terminal. Kept short: a Unix socket path has 108 bytes. */
export function attachSocketPath(id: string): string {
  return join(tmpdir(), `vessel-attach-${id.slice(0, 32)}.sock`);
}

function frame(type: Frame, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Splits a byte stream into frames; calls `on` for each complete one. */
function frameReader(on: (type: number, payload: Buffer) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      on(buf.readUInt8(0), buf.subarray(5, 5 + len));
      buf = buf.subarray(5 + len);
    }
  };
}

function resizeFrame(rows: number, columns: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(rows, 0);
  b.writeUInt16BE(columns, 2);
  return frame(Frame.Resize, b);
}

/** The monitor's side: one per container, across restarts (each run brings a new pty master). */
export class AttachHub {
  private master = -1;
  private readonly clients = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly path: string,
    private readonly onOutput: (b: Buffer) => void,
  ) {}

  static async listen(path: string, onOutput: (b: Buffer) => void): Promise<AttachHub> {
    rmSync(path, { force: true });
    const server = createServer();
    const hub = new AttachHub(server, path, onOutput);
    server.on("connection", (s) => hub.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    return hub;
  }

  private accept(s: Socket): void {
    this.clients.add(s);
    s.on(
      "data",
      frameReader((type, payload) => {
        if (this.master < 0) return;
        try {
          if (type === Frame.Input) writeSync(this.master, payload);
          else if (type === Frame.Resize && payload.length === 4)
            setWindowSize(this.master, payload.readUInt16BE(0), payload.readUInt16BE(2));
        } catch {
          // the container's side of the pty is gone: its exit frame follows
        }
      }),
    );
    const drop = () => this.clients.delete(s);
    s.on("close", drop);
    s.on("error", drop);
  }

  /**
   * Copies the pty's output to the log and to every attached client until the container's side
   * closes (the master then reads EIO); resolves then, with the master closed.
   */
  serve(master: number): Promise<void> {
    this.master = master;
    const buf = Buffer.alloc(65536);
    return new Promise<void>((resolve) => {
      const pump = () => {
        // a blocking read on the thread pool, as in console.ts's proxy
        read(master, buf, 0, buf.length, null, (err, n) => {
          if (err || n === 0) {
            this.master = -1;
            try {
              closeSync(master);
            } catch {
              // already closed
            }
            return resolve();
          }
          const out = Buffer.from(buf.subarray(0, n));
          this.onOutput(out);
          const f = frame(Frame.Output, out);
          for (const c of this.clients) c.write(f);
          pump();
        });
      };
      pump();
    });
  }

  /** Tells every attached client the container's exit status and lets them go. */
  exited(code: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32BE(code);
    for (const c of this.clients) c.end(frame(Frame.Exit, b));
    this.clients.clear();
  }

  close(): void {
    for (const c of this.clients) c.destroy();
    this.server.close();
    rmSync(this.path, { force: true });
  }
}

export type AttachResult = { detached: true } | { detached: false; exitCode: number };

/**
 * The caller's side: connects this process's terminal (raw mode when stdin is one) to a
 * container's attach socket. Typed bytes go to the container, except the detach sequence, which
 * ends the attach (the container keeps running); the pty is sized from this terminal now and on
 * every resize. With `input` false nothing typed is sent (but the detach keys still work).
 */
export function attachTerminal(
  path: string,
  opts: { detachKeys: Buffer; input: boolean },
): Promise<AttachResult> {
  return new Promise<AttachResult>((resolve, reject) => {
    const sock = createConnection(path);
    const stdin = process.stdin;
    const raw = stdin.isTTY === true;
    const matcher = new DetachKeyMatcher(opts.detachKeys);
    let result: AttachResult | undefined;
    let connected = false;
    const sendSize = () => {
      const size = callerWindowSize();
      if (size) sock.write(resizeFrame(size.height, size.width));
    };
    const onInput = (b: Buffer) => {
      const r = matcher.feed(b);
      if (opts.input && r.forward.length > 0) sock.write(frame(Frame.Input, r.forward));
      if (r.detached) {
        result = { detached: true };
        sock.end();
      }
    };
    const cleanup = () => {
      stdin.off("data", onInput);
      stdin.pause();
      if (raw) stdin.setRawMode(false);
      process.stdout.off("resize", sendSize);
    };
    sock.on("connect", () => {
      connected = true;
      if (raw) stdin.setRawMode(true);
      stdin.on("data", onInput);
      stdin.resume();
      if (process.stdout.isTTY) process.stdout.on("resize", sendSize);
      sendSize();
    });
    sock.on(
      "data",
      frameReader((type, payload) => {
        if (type === Frame.Output) writeSync(1, payload);
        else if (type === Frame.Exit && payload.length === 4)
          result ??= { detached: false, exitCode: payload.readInt32BE(0) };
      }),
    );
    sock.on("error", (err) => {
      if (connected) return;
      reject(
        new ManagerError(
          "NOT_ATTACHABLE",
          `cannot reach the container's terminal at ${path} (${(err as NodeJS.ErrnoException).code ?? err.message}): is its monitor running?`,
          { path },
          err,
        ),
      );
    });
    sock.on("close", () => {
      if (!connected) return;
      cleanup();
      resolve(result ?? { detached: false, exitCode: -1 });
    });
  });
}
