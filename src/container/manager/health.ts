import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { HealthConfig } from "../build/dockerfile.js";
import { type ContainerStore, writeJsonAtomic } from "./state.js";

/**
 * Health checks (the image's HEALTHCHECK, docker's `State.Health`), run by the container's
 * monitor while the container runs. Docker's rules (Dockerfile reference, HEALTHCHECK; moby
 * daemon/health.go):
 * - the status is `starting` when the container starts;
 * - a probe runs every Interval (StartInterval during the start period, when it is set), and is
 *   given Timeout; exit 0 is a pass, anything else or the timeout a failure;
 * - a pass makes the container `healthy` and clears the failing streak; a failure adds to the
 *   streak, and Retries failures in a row make it `unhealthy`; failures during the start period
 *   do not count;
 * - the last 5 results are kept, output cut to 4096 bytes.
 * The state lives in the container's `health.json` (not state.json, so that a probe's write never
 * races the CLI's stop request); `ps` and `inspect` read it.
 */

export type HealthStatus = "starting" | "healthy" | "unhealthy";

export interface HealthResult {
  Start: string;
  End: string;
  ExitCode: number;
  Output: string;
}

export interface HealthState {
  Status: HealthStatus;
  FailingStreak: number;
  Log: HealthResult[];
}

const SECOND = 1e9;
export const DEFAULT_INTERVAL_NS = 30 * SECOND;
export const DEFAULT_TIMEOUT_NS = 30 * SECOND;
export const DEFAULT_RETRIES = 3;
const MAX_LOG = 5;
const MAX_OUTPUT = 4096;

/** The argv a probe runs, or undefined when the image has no check (or HEALTHCHECK NONE). */
export function probeArgv(h: HealthConfig | undefined): string[] | undefined {
  const [kind, ...rest] = h?.Test ?? [];
  if (kind === "CMD" && rest.length > 0) return rest;
  if (kind === "CMD-SHELL" && rest.length > 0) return ["/bin/sh", "-c", rest.join(" ")];
  return undefined;
}

export function writeHealth(store: ContainerStore, id: string, h: HealthState): void {
  writeJsonAtomic(store.path(id, "health.json"), h);
}

/** The last health state the monitor wrote, if the container has a check. */
export function readHealth(store: ContainerStore, id: string): HealthState | undefined {
  try {
    return JSON.parse(readFileSync(store.path(id, "health.json"), "utf8")) as HealthState;
  } catch {
    return undefined;
  }
}

/** Docker's status words in `ps`: "(healthy)", "(unhealthy)", "(health: starting)". */
export function healthSuffix(h: HealthState | undefined): string {
  if (h === undefined) return "";
  return h.Status === "starting" ? " (health: starting)" : ` (${h.Status})`;
}

export interface ProbeOutcome {
  exitCode: number;
  output: string;
}

/** Runs one probe in the container; resolves (never rejects) with its exit code and output. */
export type Probe = (argv: string[], timeoutMs: number) => Promise<ProbeOutcome>;

const CLI = fileURLToPath(new URL("../../../../bin/vessel.js", import.meta.url));

/**
 * A probe that runs `vessel container exec` in a child process: the exec goes through the same
 * runtime as the container's, and the child's pipes (not the monitor's fds, which are the
 * container's log) take its output. On the timeout the child is killed and the result is
 * docker's -1 "Health check exceeded timeout".
 */
export function execProbe(root: string, id: string): Probe {
  return (argv, timeoutMs) =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI, "container", "exec", id, ...argv], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, VESSEL_ROOT: root },
      });
      let output = "";
      const take = (b: Buffer) => {
        if (output.length < MAX_OUTPUT) output = (output + b.toString()).slice(0, MAX_OUTPUT);
      };
      child.stdout.on("data", take);
      child.stderr.on("data", take);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, timeoutMs);
      child.on("error", (err) => {
        clearTimeout(timer);
        resolve({ exitCode: -1, output: `cannot run the health check: ${err.message}` });
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        if (timedOut)
          resolve({ exitCode: -1, output: `Health check exceeded timeout (${timeoutMs / 1000}s)` });
        else resolve({ exitCode: code ?? -1, output });
      });
    });
}

/** Applies one probe's result to the state, as moby's handleProbeResult does. */
export function nextHealth(
  prev: HealthState,
  result: HealthResult,
  inStartPeriod: boolean,
  retries: number,
): HealthState {
  const Log = [...prev.Log, result].slice(-MAX_LOG);
  if (result.ExitCode === 0) return { Status: "healthy", FailingStreak: 0, Log };
  if (inStartPeriod) return { ...prev, Log };
  const FailingStreak = prev.FailingStreak + 1;
  return {
    Status: FailingStreak >= retries ? "unhealthy" : prev.Status,
    FailingStreak,
    Log,
  };
}

export interface HealthMonitorOptions {
  config: HealthConfig;
  probe: Probe;
  /** Receives every new state (the monitor writes it to state.json). */
  publish: (h: HealthState) => void;
  now?: () => number;
}

/** Runs the probes of one container start; stop() ends them (the container exited). */
export class HealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private state: HealthState = { Status: "starting", FailingStreak: 0, Log: [] };
  private readonly started: number;
  private readonly now: () => number;

  constructor(private readonly opts: HealthMonitorOptions) {
    this.now = opts.now ?? Date.now;
    this.started = this.now();
  }

  /** Publishes `starting` and schedules the first probe. */
  start(): void {
    this.publish();
    this.schedule();
  }

  private publish(): void {
    try {
      this.opts.publish(this.state);
    } catch {
      // the container's directory is going (rm -f): there is nothing left to record it in
    }
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private inStartPeriod(at: number): boolean {
    return (at - this.started) * 1e6 < (this.opts.config.StartPeriod ?? 0);
  }

  private schedule(): void {
    if (this.stopped) return;
    const c = this.opts.config;
    const interval =
      this.inStartPeriod(this.now()) && c.StartInterval ? c.StartInterval : c.Interval || DEFAULT_INTERVAL_NS;
    // a probe never rejects and publish() is guarded: nothing here may bring the monitor down
    this.timer = setTimeout(() => void this.runOnce().catch(() => undefined), interval / 1e6);
    this.timer.unref?.();
  }

  /** One probe and its effect on the state (exposed for tests). */
  async runOnce(): Promise<HealthState> {
    const argv = probeArgv(this.opts.config);
    if (argv === undefined || this.stopped) return this.state;
    const c = this.opts.config;
    const startAt = this.now();
    const r = await this.opts.probe(argv, (c.Timeout || DEFAULT_TIMEOUT_NS) / 1e6);
    if (this.stopped) return this.state;
    const result: HealthResult = {
      Start: new Date(startAt).toISOString(),
      End: new Date(this.now()).toISOString(),
      ExitCode: r.exitCode,
      Output: r.output,
    };
    this.state = nextHealth(this.state, result, this.inStartPeriod(startAt), c.Retries || DEFAULT_RETRIES);
    this.publish();
    this.schedule();
    return this.state;
  }
}
