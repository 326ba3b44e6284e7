import { type ChildProcess, spawn } from "node:child_process";
import type { Progress } from "./default_guest.js";

export interface StreamingResult {
  status: number;
  /** The last 20 non-empty lines of its output (stdout and stderr together). */
  tail: string[];
}

export interface StreamingOptions {
  /** Added to the environment (which always has LC_ALL=C and DEBIAN_FRONTEND=noninteractive). */
  env?: Record<string, string>;
  /** Called once the child is spawned, with its stdin open (otherwise stdin is /dev/null). */
  onSpawn?: (child: ChildProcess) => void;
}

/** Runs a program, passing its output lines to `progress`; resolves with its status and last lines. */
export function runStreaming(
  program: string,
  args: string[],
  progress: Progress,
  prefix: string,
  options: StreamingOptions = {},
): Promise<StreamingResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      stdio: [options.onSpawn === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: { ...process.env, LC_ALL: "C", DEBIAN_FRONTEND: "noninteractive", ...options.env },
    });
    const tail: string[] = [];
    let partial = "";
    const onData = (d: Buffer): void => {
      const lines = (partial + d.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) {
        if (l.trim() === "") continue;
        progress(`${prefix}${l}`);
        tail.push(l);
        if (tail.length > 20) tail.shift();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.on("error", reject);
    child.on("close", (status) => {
      if (partial.trim() !== "") {
        progress(`${prefix}${partial}`);
        tail.push(partial);
      }
      resolve({ status: status ?? 1, tail });
    });
    if (options.onSpawn !== undefined && child.pid !== undefined) options.onSpawn(child);
  });
}
