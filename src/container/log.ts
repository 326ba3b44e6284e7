import { appendFileSync, writeSync } from "node:fs";
import { currentRequest } from "./request.js";

/**
 * The runtime's log, as runc writes it: `--log FILE` with `--log-format text|json`. podman's
 * conmon reads error lines of the JSON form `{"level":"error","msg":...,"time":...}` from the log
 * to explain a failed runtime call. Writes are synchronous, and never touch process.stdout or
 * process.stderr: making those streams would set O_NONBLOCK on descriptors the container shares.
 */
export type LogFormat = "text" | "json";

export class RuntimeLog {
  constructor(
    readonly file: string | undefined,
    readonly format: LogFormat = "text",
    readonly debugEnabled = false,
  ) {}

  private line(level: "debug" | "info" | "warning" | "error", msg: string): void {
    const time = new Date().toISOString();
    const text =
      this.format === "json"
        ? `${JSON.stringify({ level, msg, time })}\n`
        : `time="${time}" level=${level} msg=${JSON.stringify(msg)}\n`;
    if (this.file) {
      try {
        appendFileSync(this.file, text);
        return;
      } catch {
        // fall through to stderr
      }
    }
    if (level !== "debug" || this.debugEnabled) writeStderr(text);
  }

  debug(msg: string): void {
    if (this.debugEnabled) this.line("debug", msg);
  }
  warn(msg: string): void {
    this.line("warning", msg);
  }
  /** Errors go to the log file when there is one, and always to stderr as plain text. */
  error(msg: string): void {
    if (this.file) this.line("error", msg);
    writeStderr(`vessel-runc: ${msg}\n`);
  }
}

export function writeStderr(text: string): void {
  const req = currentRequest();
  if (req) {
    req.stderr.push(Buffer.from(text));
    return;
  }
  try {
    writeSync(2, text);
  } catch {
    // stderr closed: nothing to do
  }
}

export function writeStdout(text: string): void {
  const b = Buffer.from(text);
  const req = currentRequest();
  if (req) {
    req.stdout.push(b);
    return;
  }
  for (let off = 0; off < b.length; ) {
    try {
      off += writeSync(1, b, off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EAGAIN") continue;
      throw err;
    }
  }
}
