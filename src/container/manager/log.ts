import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeSync } from "node:fs";

/**
 * Container logs in docker's json-file format: one JSON object per line of output,
 * `{"log":"text\n","stream":"stdout","time":"2024-01-01T00:00:00.000Z"}`. The monitor writes them;
 * `logs` reads, tails and follows them.
 */

export interface LogLine {
  log: string;
  stream: "stdout" | "stderr";
  time: string;
}

export class LogWriter {
  private readonly fd: number;
  private readonly partial = { stdout: "", stderr: "" };

  constructor(path: string) {
    this.fd = openSync(path, "a", 0o640);
  }

  write(stream: "stdout" | "stderr", chunk: Buffer | string): void {
    const text = this.partial[stream] + chunk.toString();
    const lines = text.split("\n");
    this.partial[stream] = lines.pop() ?? "";
    const time = new Date().toISOString();
    let out = "";
    for (const l of lines) out += `${JSON.stringify({ log: `${l}\n`, stream, time })}\n`;
    if (out !== "") writeSync(this.fd, out);
  }

  /** Writes what is left of an unterminated last line. */
  flush(): void {
    const time = new Date().toISOString();
    for (const stream of ["stdout", "stderr"] as const) {
      if (this.partial[stream] !== "") {
        writeSync(this.fd, `${JSON.stringify({ log: this.partial[stream], stream, time })}\n`);
        this.partial[stream] = "";
      }
    }
  }

  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}

export function parseLogLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const l of text.split("\n")) {
    if (l === "") continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // a torn last line while the writer is mid-write: skip
    }
  }
  return out;
}

export function readLog(path: string, tail?: number): { lines: LogLine[]; offset: number } {
  if (!existsSync(path)) return { lines: [], offset: 0 };
  const text = readFileSync(path, "utf8");
  const end = text.lastIndexOf("\n") + 1;
  let lines = parseLogLines(text.slice(0, end));
  if (tail !== undefined) lines = tail === 0 ? [] : lines.slice(-tail);
  return { lines, offset: Buffer.byteLength(text.slice(0, end)) };
}

/** Reads complete lines appended since `offset`. */
export function readLogFrom(path: string, offset: number): { lines: LogLine[]; offset: number } {
  if (!existsSync(path)) return { lines: [], offset };
  const size = statSync(path).size;
  if (size <= offset) return { lines: [], offset };
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(size - offset);
    readSync(fd, buf, 0, buf.length, offset);
    const end = buf.lastIndexOf(0x0a) + 1;
    return { lines: parseLogLines(buf.subarray(0, end).toString("utf8")), offset: offset + end };
  } finally {
    closeSync(fd);
  }
}

export function formatLine(l: LogLine, timestamps: boolean): string {
  return timestamps ? `${l.time} ${l.log}` : l.log;
}
