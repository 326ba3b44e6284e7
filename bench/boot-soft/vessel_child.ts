/**
 * One Vessel soft-engine run in a process of its own, so its peak RSS is the VMM's alone (the
 * benchmark's parent process also runs v86 and holds the other results). Used by bench/boot-soft
 * and bench/cpu-soft:
 *   node dist/bench/boot-soft/vessel_child.js '<JSON VmConfig>'
 * Prints one JSON line (ChildResult) on stdout. Console lines of the form `@@bench <name> <start|end>`
 * are timestamped here, on the host's clock, as they arrive: the soft engine's guest clock is
 * virtual (instructions retired, engines/soft/instruction_clock.ts), so a time measured inside the
 * guest says how many instructions ran, not how long they took.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { VmConfig } from "../../src/vm/config.js";
import { Vm } from "../../src/vm/vm.js";

export interface ChildResult {
  /** Host ms from machine start to the userspace marker. */
  userspaceMs?: number;
  wallMs: number;
  reason: string;
  detail: string;
  exitStatus?: number;
  instructions?: number;
  bt?: Record<string, unknown>;
  technique?: string;
  /** Peak resident set of this process (VMM and machine thread), KiB. */
  maxRssKiB: number;
  /** `@@bench` markers: name -> host ms since machine start, for start and end. */
  markers: Record<string, { start?: number; end?: number }>;
  /** The guest's console output (last 4 KiB), for messages. */
  console: string;
}

/** Finds `@@bench <name> <start|end>` lines in console text and records when they came. */
export class MarkerWatch {
  readonly markers: ChildResult["markers"] = {};
  private line = "";
  text = "";
  constructor(private readonly now: () => number) {}
  feed(chunk: string): void {
    this.text = (this.text + chunk).slice(-4096);
    for (const ch of chunk) {
      if (ch !== "\n") {
        this.line += ch;
        continue;
      }
      const m = /@@bench (\S+) (start|end)/.exec(this.line);
      if (m !== null) (this.markers[m[1]!] ??= {})[m[2] as "start" | "end"] = this.now();
      this.line = "";
    }
  }
}

/** Runs `config` in a child process; resolves with its result, or a sentence saying what failed. */
export function runVesselChild(config: VmConfig): Promise<ChildResult | string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(config)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let text = "";
    child.stdout.on("data", (d: Buffer) => {
      text += d.toString();
    });
    child.on("close", (code) => {
      const line = text.trim().split("\n").pop() ?? "";
      try {
        resolve(JSON.parse(line) as ChildResult);
      } catch {
        resolve(`the Vessel run failed (exit ${code}): ${text.slice(-300)}`);
      }
    });
  });
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "") as VmConfig;
  const t0 = performance.now();
  let userspaceMs: number | undefined;
  const watch = new MarkerWatch(() => performance.now() - t0);
  const decoder = new TextDecoder();
  const vm = Vm.start(config, {
    onUserspace: () => {
      userspaceMs ??= performance.now() - t0;
    },
    onOutput: (b) => watch.feed(decoder.decode(b, { stream: true })),
  });
  const r = await vm.wait();
  const out: ChildResult = {
    wallMs: performance.now() - t0,
    reason: r.reason,
    detail: r.detail.split("\n")[0] ?? "",
    maxRssKiB: process.resourceUsage().maxRSS,
    markers: watch.markers,
    console: watch.text,
    ...(userspaceMs === undefined ? {} : { userspaceMs }),
    ...(r.exitStatus === undefined ? {} : { exitStatus: r.exitStatus }),
    ...(r.instructions === undefined ? {} : { instructions: r.instructions }),
    ...(r.bt === undefined ? {} : { bt: r.bt as unknown as Record<string, unknown> }),
    ...(r.technique === undefined ? {} : { technique: r.technique }),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

if (process.argv[1]?.endsWith("vessel_child.js")) await main();
