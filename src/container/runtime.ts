import { spawnSync } from "node:child_process";
import {
  closeSync,
  constants,
  existsSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import {
  type CgroupManager,
  cgroupManagerFor,
  cgroupManagerFromRecord,
  cgroupRelativePath,
  DEFAULT_DEVICE_RULES,
  hostCgroupMounts,
} from "./cgroups.js";
import { ContainerError, notRunning } from "./errors.js";
import { runHooks } from "./hooks.js";
import { RuntimeLog } from "./log.js";
import type { StdioFds } from "./nsexec.js";
import { callerPath, currentRequest } from "./request.js";
import { parseSignal } from "./signals.js";
import { loadSpec, type Process, type Resources, type Spec } from "./spec.js";
import {
  type ContainerRecord,
  checkId,
  DEFAULT_ROOT,
  isAlive,
  OCI_VERSION,
  type OciState,
  procStat,
  StateStore,
} from "./state.js";

/**
 * Vessel's OCI runtime as a library: the operations of the runtime spec (runtime.md
 * "Operations") plus runc's extras. The `vessel-runc` CLI (src/cli/runtime.ts) and the container
 * manager call these same functions.
 */

export interface RuntimeOptions {
  /** state root; default /run/vessel-runc */
  root?: string;
  /** cgroupsPath is "slice:prefix:name" (runc's --systemd-cgroup); see cgroupRelativePath */
  systemdCgroup?: boolean;
  log?: RuntimeLog;
}

export interface CreateOptions {
  bundle: string;
  pidFile?: string | undefined;
  consoleSocket?: string | undefined;
  preserveFds?: number | undefined;
  noPivot?: boolean | undefined;
  noNewKeyring?: boolean | undefined;
  /**
   * Descriptors the container's process gets as its fds 0, 1 and 2 (default: this process's),
   * e.g. pipe ends so a caller in this process captures its output.
   */
  stdio?: StdioFds | undefined;
}

export interface ExecOptions {
  consoleSocket?: string | undefined;
  pidFile?: string | undefined;
  /** return once the process runs, instead of waiting for its exit status */
  detach?: boolean | undefined;
  preserveFds?: number | undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** SIGKILLs each of `pids`; those already gone are skipped. */
function killAll(pids: readonly number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

function writePidFile(path: string | undefined, pid: number): void {
  if (!path) return;
  const abs = callerPath(path);
  const tmp = join(dirname(abs), `.${process.pid}.pid.tmp`);
  writeFileSync(tmp, String(pid));
  renameSync(tmp, abs);
}

export class Runtime {
  readonly store: StateStore;
  readonly log: RuntimeLog;
  private readonly systemdCgroup: boolean;

  constructor(opts: RuntimeOptions = {}) {
    this.store = new StateStore(opts.root ?? DEFAULT_ROOT);
    this.log = opts.log ?? new RuntimeLog(undefined);
    this.systemdCgroup = opts.systemdCgroup ?? false;
  }

  /** The spec saved at create time (the bundle may change or go away later); validated then. */
  savedSpec(id: string): Spec {
    return JSON.parse(readFileSync(join(this.store.dir(id), "config.json"), "utf8")) as Spec;
  }

  private hookState(
    rec: Pick<ContainerRecord, "id" | "pid" | "bundle" | "annotations">,
    status: string,
  ): string {
    return JSON.stringify({
      ociVersion: OCI_VERSION,
      id: rec.id,
      status,
      pid: rec.pid,
      bundle: rec.bundle,
      annotations: rec.annotations,
    });
  }

  /**
   * Creates the container: namespaces, cgroups, mounts, root; its init then waits on the exec
   * fifo until `start`. On any failure nothing is left behind: no process, cgroup or state dir.
   */
  async create(
    id: string,
    opts: CreateOptions,
    wait = false,
  ): Promise<{ state: OciState; exit: Promise<number>; release(code: number): void }> {
    checkId(id);
    // loaded here, not at the top: `state`, `kill` and `delete` never need the plan builder,
    // the seccomp compiler or its syscall tables, and podman calls those often
    const [{ buildCreatePlan }, { runHelper }, { availableCaps }] = await Promise.all([
      import("./plan.js"),
      import("./nsexec.js"),
      import("./capabilities.js"),
    ]);
    const bundle = callerPath(opts.bundle);
    const spec = loadSpec(bundle);
    const rootfs = resolve(bundle, spec.root!.path);
    const dir = this.store.claim(id);
    let cgroup: CgroupManager | undefined;
    let pid = 0;
    const rec: ContainerRecord = {
      id,
      pid: 0,
      startTime: "",
      bundle,
      rootfs,
      created: new Date().toISOString(),
      owner: "",
      annotations: spec.annotations ?? {},
      cgroup: { version: 1, paths: {} },
      systemdCgroup: this.systemdCgroup,
    };
    try {
      writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
      // VESSEL_RUNC_CGROUP2=<cgroup2 mount>: use that v2 hierarchy (tests on hybrid hosts)
      const v2 = process.env.VESSEL_RUNC_CGROUP2;
      const mounts = v2 ? [{ mountpoint: v2, controllers: [], version: 2 as const }] : hostCgroupMounts();
      cgroup = cgroupManagerFor(cgroupRelativePath(spec.linux?.cgroupsPath, id, this.systemdCgroup), mounts);
      rec.cgroup = cgroup.record;
      cgroup.create();
      const resources = spec.linux?.resources ?? {};
      const deviceRules = resources.devices ? [...resources.devices, ...DEFAULT_DEVICE_RULES] : undefined;
      cgroup.apply(deviceRules ? { ...resources, devices: deviceRules } : resources);
      let deviceFilter: Buffer | undefined;
      if (deviceRules && cgroup.record.version === 2) {
        const { compileDeviceFilter, encodeEbpf } = await import("./device_filter.js");
        deviceFilter = encodeEbpf(compileDeviceFilter(deviceRules));
      }
      const hasRuntimeHooks =
        (spec.hooks?.prestart?.length ?? 0) + (spec.hooks?.createRuntime?.length ?? 0) > 0;
      const plan = buildCreatePlan({
        spec,
        bundle,
        rootfs,
        fifo: this.store.fifo(id),
        ...(opts.consoleSocket ? { consoleSocket: callerPath(opts.consoleSocket) } : {}),
        cgroup: cgroup.record,
        cgroupMounts: mounts,
        noPivot: opts.noPivot ?? false,
        noNewKeyring: opts.noNewKeyring ?? false,
        preserveFds: opts.preserveFds ?? 0,
        wait,
        availableCaps: availableCaps(),
        syncCreateRuntime: hasRuntimeHooks,
        ...(deviceFilter ? { deviceFilter } : {}),
        hookState: this.hookState(rec, "created"),
      });
      this.log.debug(
        `create ${id}: ${plan.child.length} container set-up steps, clone flags 0x${plan.cloneFlags.toString(16)}`,
      );
      const run = await runHelper(
        plan,
        opts.preserveFds ?? 0,
        {
          onPid: (p) => {
            pid = p;
            rec.pid = p;
            rec.startTime = procStat(p)?.startTime ?? "";
            this.store.write(rec);
          },
          onSync: (name) => {
            if (name !== "createRuntime") return;
            const state = this.hookState(rec, "creating");
            runHooks("prestart", spec.hooks?.prestart, state);
            runHooks("createRuntime", spec.hooks?.createRuntime, state);
          },
        },
        opts.stdio,
      );
      rec.pid = run.pid;
      rec.startTime = procStat(run.pid)?.startTime ?? "";
      this.store.write(rec);
      writePidFile(opts.pidFile, run.pid);
      // create: the helper may go now (the init stays, waiting on the fifo); run: it stays as
      // the init's parent and reports the exit status
      if (!wait) run.release(0);
      return { state: this.store.ociState(rec), exit: run.exit, release: run.release };
    } catch (err) {
      await this.cleanupFailed(id, pid, cgroup);
      throw err;
    }
  }

  private async cleanupFailed(id: string, pid: number, cgroup: CgroupManager | undefined): Promise<void> {
    if (pid > 0) killAll([pid]);
    if (cgroup) {
      killAll(cgroup.pids());
      for (let i = 0; i < 200 && cgroup.pids().length > 0; i++) await sleep(5);
      try {
        cgroup.destroy();
      } catch (e) {
        this.log.warn((e as Error).message);
      }
    }
    this.store.remove(id);
  }

  /** Lets a created container's init exec the user's process, then runs poststart hooks. */
  async start(id: string): Promise<void> {
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (status !== "created") {
      throw new ContainerError(
        "not_created",
        status === "stopped"
          ? `cannot start a container that has stopped: container "${id}"`
          : `cannot start container "${id}": it is ${status}, not created`,
        { id, status },
      );
    }
    const fifo = this.store.fifo(id);
    let fd: number;
    try {
      fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (err) {
      throw new ContainerError(
        "start_failed",
        `cannot start container "${id}": its init is gone (${(err as Error).message})`,
        { id },
        err,
      );
    }
    try {
      writeSync(fd, "0");
    } finally {
      closeSync(fd);
    }
    unlinkSync(fifo);
    const spec = this.savedSpec(id);
    try {
      runHooks("poststart", spec.hooks?.poststart, this.hookState(rec, "running"));
    } catch (err) {
      this.log.warn((err as Error).message);
    }
  }

  /**
   * `run`: create and start; without `detach`, waits for the process, deletes the container and
   * returns the exit status (128+signal when killed), forwarding signals to the container.
   */
  async run(id: string, opts: CreateOptions & { detach?: boolean | undefined }): Promise<number> {
    const { exit, release } = await this.create(id, opts, !opts.detach);
    try {
      await this.start(id);
    } catch (err) {
      await this.delete(id, { force: true });
      throw err;
    }
    if (opts.detach) return 0;
    const rec = this.store.read(id);
    const forward = (sig: NodeJS.Signals) => {
      try {
        process.kill(rec.pid, sig);
      } catch {
        // gone
      }
    };
    // signals sent to this process go to the container (the helper forwards its own too);
    // not in the runtime server, whose signals are its own
    const sigs: NodeJS.Signals[] = currentRequest()
      ? []
      : ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"];
    for (const s of sigs) process.on(s, forward);
    const code = await exit;
    for (const s of sigs) process.off(s, forward);
    await this.delete(id, { force: true });
    release(code);
    return code;
  }

  state(id: string): OciState {
    return this.store.ociState(this.store.read(id));
  }

  list(): OciState[] {
    const out: OciState[] = [];
    for (const id of this.store.ids()) {
      try {
        out.push(this.state(id));
      } catch {
        // removed meanwhile
      }
    }
    return out;
  }

  /** Sends a signal to the init, or (`all`) to every process of the container's cgroup. */
  kill(id: string, signal: string | number = "SIGTERM", opts: { all?: boolean } = {}): void {
    const rec = this.store.read(id);
    const sig = parseSignal(signal);
    const status = this.store.status(rec);
    if (status === "stopped" && !opts.all) throw notRunning(id);
    const targets = opts.all ? cgroupManagerFromRecord(rec.cgroup).pids() : [rec.pid];
    if (opts.all && status !== "stopped" && !targets.includes(rec.pid)) targets.push(rec.pid);
    if (targets.length === 0) throw notRunning(id);
    const paused = status === "paused";
    for (const p of targets) {
      try {
        process.kill(p, sig);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      }
    }
    // a frozen process only acts on its signal once thawed (runc resumes after kill --all too)
    if (paused && (sig === 9 || opts.all)) cgroupManagerFromRecord(rec.cgroup).thaw();
  }

  /** Removes a stopped container (or, with `force`, kills it first); runs poststop hooks. */
  async delete(id: string, opts: { force?: boolean } = {}): Promise<void> {
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    const cgroup = cgroupManagerFromRecord(rec.cgroup);
    if (status !== "stopped") {
      // runc deletes a created container (its init still waits on the fifo) without --force
      if (!opts.force && status !== "created") {
        throw new ContainerError(
          "not_stopped",
          `cannot delete container "${id}" that is not stopped: ${status}`,
          { id, status },
        );
      }
      killAll([rec.pid, ...cgroup.pids()]);
      if (status === "paused") cgroup.thaw();
      for (let i = 0; i < 1000 && isAlive(rec); i++) await sleep(5);
    } else {
      // a stopped init may leave orphans behind in its cgroup (no pid namespace): end them
      killAll(cgroup.pids());
    }
    for (let i = 0; i < 400 && cgroup.pids().length > 0; i++) await sleep(5);
    let spec: Spec | undefined;
    try {
      spec = this.savedSpec(id);
    } catch {
      spec = undefined;
    }
    try {
      cgroup.destroy();
    } catch (err) {
      this.log.warn((err as Error).message);
    }
    this.store.remove(id);
    try {
      runHooks("poststop", spec?.hooks?.poststop, this.hookState(rec, "stopped"));
    } catch (err) {
      this.log.warn((err as Error).message);
    }
  }

  /** Runs one more process in a running container; returns its exit status (0 when detached). */
  async exec(id: string, proc: Process, opts: ExecOptions = {}): Promise<number> {
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (status === "stopped") throw notRunning(id);
    if (status === "paused")
      throw new ContainerError("paused", `cannot exec in a paused container "${id}": resume it first`);
    const spec = this.savedSpec(id);
    const [{ buildExecPlan }, { runHelper }, { availableCaps }] = await Promise.all([
      import("./plan.js"),
      import("./nsexec.js"),
      import("./capabilities.js"),
    ]);
    const plan = buildExecPlan({
      initPid: rec.pid,
      spec,
      process: proc,
      cgroup: rec.cgroup,
      ...(opts.consoleSocket ? { consoleSocket: callerPath(opts.consoleSocket) } : {}),
      preserveFds: opts.preserveFds ?? 0,
      wait: !opts.detach,
      availableCaps: availableCaps(),
    });
    const run = await runHelper(plan, opts.preserveFds ?? 0);
    writePidFile(opts.pidFile, run.pid);
    if (opts.detach) {
      run.release(0);
      return 0;
    }
    const code = await run.exit;
    run.release(code);
    return code;
  }

  pause(id: string): void {
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (status !== "running" && status !== "created") throw notRunning(id);
    cgroupManagerFromRecord(rec.cgroup).freeze();
  }

  resume(id: string): void {
    const rec = this.store.read(id);
    if (this.store.status(rec) !== "paused")
      throw new ContainerError("not_paused", `container "${id}" is not paused`, { id });
    cgroupManagerFromRecord(rec.cgroup).thaw();
  }

  /** Changes the cgroup limits of a live container (runc update). */
  update(id: string, resources: Resources): void {
    const rec = this.store.read(id);
    if (this.store.status(rec) === "stopped") throw notRunning(id);
    cgroupManagerFromRecord(rec.cgroup).apply(resources);
  }

  /** The host pids of the container's processes. */
  ps(id: string): number[] {
    const rec = this.store.read(id);
    return cgroupManagerFromRecord(rec.cgroup).pids();
  }

  /** `ps` as a table: /bin/ps run with the given arguments, filtered to the container's pids. */
  psTable(id: string, psArgs: string[]): string {
    const pids = new Set(this.ps(id));
    const ps = ["/bin/ps", "/usr/bin/ps"].find((p) => existsSync(p));
    if (!ps)
      throw new ContainerError("no_ps", "ps table output needs /bin/ps (package procps); use --format json");
    const r = spawnSync(ps, psArgs.length ? psArgs : ["-ef"], { encoding: "utf8" });
    const lines = r.stdout.split("\n");
    const header = lines[0] ?? "";
    const col = header.trim().split(/\s+/).indexOf("PID");
    if (col < 0) throw new ContainerError("ps_format", `ps output has no PID column: ${header}`);
    const rows = lines.slice(1).filter((l) => pids.has(Number(l.trim().split(/\s+/)[col])));
    return `${[header, ...rows].join("\n")}\n`;
  }
}
