import { spawn, spawnSync } from "node:child_process";
import { closeSync, constants as fsConstants, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../../errors.js";
import type { HealthConfig } from "../build/dockerfile.js";
import { shortId } from "../image/digest.js";
import { defaultRoot, ImageStore } from "../image/store.js";
import { defaultBridge, leftovers as networkLeftovers } from "../network/bridge.js";
import { isBuiltin, NetworkStore } from "../network/networks.js";
import { type AttachOutcome, attachContainer } from "./attach_container.js";
import { ManagerError } from "./errors.js";
import { probeArgv, readHealth } from "./health.js";
import { readLogFrom } from "./log.js";
import { supervise, teardown } from "./monitor.js";
import { cgroupsPath, resolveUser } from "./oci_config.js";
import {
  mergeEnv,
  type NetworkMode,
  parseBytes,
  parseCpus,
  parseEnv,
  parsePort,
  parseRestart,
  parseVolume,
  readEnvFile,
} from "./options.js";
import { cgroupLeftovers, isMounted } from "./rootfs.js";
import { defaultDriver, type RuntimeDriver } from "./runtime_driver.js";
import { type ContainerConfig, type ContainerState, ContainerStore, pidAlive, randomName } from "./state.js";

/**
 * The container manager: docker's verbs over the image store, the monitor and an OCI runtime.
 * The CLI (src/cli/container.ts) and any API call these methods; no logic lives in the CLI.
 */

export interface RunRequest {
  image: string;
  args: string[];
  name?: string;
  detach?: boolean;
  interactive?: boolean;
  tty?: boolean;
  autoRemove?: boolean;
  env?: string[];
  envFiles?: string[];
  volumes?: string[];
  ports?: string[];
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
  user?: string;
  readOnly?: boolean;
  network?: NetworkMode;
  /** Names other containers of its user network reach it by, besides its name (compose: the service). */
  networkAliases?: string[];
  /** Overrides the image's HEALTHCHECK (docker run --health-cmd; compose's healthcheck). */
  healthcheck?: HealthConfig;
  restart?: string;
  entrypoint?: string;
  workdir?: string;
  hostname?: string;
  labels?: Record<string, string>;
}

export interface ContainerView {
  config: ContainerConfig;
  state: ContainerState;
}

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export class Manager {
  readonly root: string;
  readonly containers: ContainerStore;
  readonly images: ImageStore;
  /** User networks (`vessel network`); one in use by a container of this root cannot be removed. */
  readonly networks: NetworkStore;
  private driverCache?: RuntimeDriver;

  constructor(root: string = defaultRoot()) {
    this.root = root;
    this.containers = new ContainerStore(root);
    this.images = new ImageStore(root);
    this.networks = new NetworkStore(root, (net) =>
      this.list(true)
        .filter((v) => v.config.network === net)
        .map((v) => ({ id: v.config.id, name: v.config.name, status: v.state.status })),
    );
  }

  async driver(): Promise<RuntimeDriver> {
    this.driverCache ??= await defaultDriver(this.root);
    return this.driverCache;
  }

  /** Validates a run request and writes the container's record (docker create). */
  create(req: RunRequest): ContainerConfig {
    const volumes = (req.volumes ?? []).map(parseVolume);
    const ports = (req.ports ?? []).map(parsePort);
    const { network, networkAliases } = this.checkNetwork(req, ports);
    const memory = req.memory !== undefined ? parseBytes(req.memory) : undefined;
    const cpus = req.cpus !== undefined ? parseCpus(req.cpus) : undefined;
    let pidsLimit: number | undefined;
    if (req.pidsLimit !== undefined) {
      if (!/^-?\d+$/.test(req.pidsLimit))
        throw new UsageError("BAD_PIDS", `invalid --pids-limit "${req.pidsLimit}"`);
      pidsLimit = Number(req.pidsLimit);
    }
    const restart = parseRestart(req.restart ?? "no");
    if (req.autoRemove && restart.name !== "no")
      throw new UsageError("BAD_RESTART", "--rm and --restart cannot be used together");
    const img = this.images.resolve(req.image);
    const ic = img.config.config ?? {};
    // docker's image config carries Healthcheck beside the OCI fields (HEALTHCHECK NONE: none)
    const healthcheck = req.healthcheck ?? (ic as { Healthcheck?: HealthConfig }).Healthcheck;
    const entrypoint =
      req.entrypoint !== undefined ? (req.entrypoint === "" ? [] : [req.entrypoint]) : (ic.Entrypoint ?? []);
    const cmd = req.args.length > 0 ? req.args : req.entrypoint !== undefined ? [] : (ic.Cmd ?? []);
    const args = [...entrypoint, ...cmd];
    if (args.length === 0) {
      throw new UsageError(
        "NO_COMMAND",
        `image "${req.image}" has no CMD or ENTRYPOINT: give a command after the image name`,
      );
    }
    const userEnv: string[] = [];
    for (const f of req.envFiles ?? []) userEnv.push(...readEnvFile(f));
    for (const e of req.env ?? []) {
      const v = parseEnv(e);
      if (v !== undefined) userEnv.push(v);
    }
    if (req.name !== undefined) {
      if (!NAME_RE.test(req.name))
        throw new UsageError(
          "BAD_NAME",
          `invalid container name "${req.name}": use [a-zA-Z0-9][a-zA-Z0-9_.-]*`,
        );
      const other = this.containers.nameTaken(req.name);
      if (other) {
        throw new ManagerError(
          "NAME_IN_USE",
          `the name "${req.name}" is already used by container ${shortId(other)}; remove it or pick another name`,
          {
            name: req.name,
          },
        );
      }
    }
    const id = this.containers.newId();
    const cfg: ContainerConfig = {
      id,
      name: req.name ?? randomName((n) => this.containers.nameTaken(n) !== undefined),
      image: req.image,
      imageId: img.id,
      created: new Date().toISOString(),
      args,
      env: mergeEnv(ic.Env ?? [], userEnv),
      cwd: req.workdir ?? ic.WorkingDir ?? "/",
      user: req.user ?? ic.User ?? "",
      tty: req.tty ?? false,
      interactive: req.interactive ?? false,
      detach: req.detach ?? false,
      autoRemove: req.autoRemove ?? false,
      readOnly: req.readOnly ?? false,
      network,
      ...(networkAliases.length > 0 ? { networkAliases } : {}),
      ports,
      volumes,
      ...(memory !== undefined ? { memory } : {}),
      ...(cpus !== undefined ? { cpus } : {}),
      ...(pidsLimit !== undefined ? { pidsLimit } : {}),
      restart,
      hostname: req.hostname ?? id.slice(0, 12),
      stopSignal: ic.StopSignal ?? "SIGTERM",
      labels: { ...(ic.Labels ?? {}), ...(req.labels ?? {}) },
      ...(probeArgv(healthcheck) ? { healthcheck: healthcheck! } : {}),
    };
    this.containers.writeConfig(cfg);
    this.containers.writeState(id, { status: "created", restartCount: 0, bootId: "" });
    return cfg;
  }

  /**
   * The network of a run request: a built-in mode or an existing user network (by name or id,
   * recorded by name), ports only where there is a bridge, aliases only on a user network.
   */
  private checkNetwork(
    req: RunRequest,
    ports: ReturnType<typeof parsePort>[],
  ): { network: NetworkMode; networkAliases: string[] } {
    let network = req.network ?? "bridge";
    if (!isBuiltin(network)) {
      const n = this.networks.find(network);
      if (n === undefined)
        throw new UsageError(
          "BAD_NETWORK",
          `invalid --network "${network}": no such network; create it with \`vessel network create ${network}\` or use bridge, host or none`,
          { value: network },
        );
      network = n.name;
    }
    if (ports.length > 0 && (network === "host" || network === "none")) {
      throw new UsageError(
        "BAD_PORT",
        `-p needs the bridge network or a user network (with --network ${network} there is nothing to publish)`,
      );
    }
    const seen = new Set<string>();
    for (const p of ports) {
      const key = `${p.hostIp === "0.0.0.0" ? "" : p.hostIp}:${p.hostPort}/${p.protocol}`;
      if (seen.has(key) || seen.has(`:${p.hostPort}/${p.protocol}`))
        throw new UsageError("BAD_PORT", `host port ${p.hostPort} is published twice (${p.protocol})`);
      seen.add(key);
    }
    const networkAliases = req.networkAliases ?? [];
    if (networkAliases.length > 0 && isBuiltin(network))
      throw new UsageError(
        "BAD_NETWORK",
        `--network-alias needs a user network (the ${network} network has no names); create one with \`vessel network create NAME\``,
      );
    for (const a of networkAliases)
      if (!NAME_RE.test(a))
        throw new UsageError("BAD_NETWORK", `invalid --network-alias "${a}": use [a-zA-Z0-9][a-zA-Z0-9_.-]*`);
    return { network, networkAliases };
  }

  /**
   * Runs a created container attached to this process; returns its exit code. With a runtime
   * that gives pipes, or for --rm, -t and -i runs, the monitor runs in this process (the library
   * runtime then writes straight to this terminal). Otherwise the container runs under its own
   * monitor process, as with -d, so that `logs` has its output, and this process follows the log.
   */
  async runAttached(id: string): Promise<number> {
    const cfg = this.containers.config(id);
    const driver = await this.driver();
    if (driver.canPipe || cfg.autoRemove || cfg.tty || cfg.interactive) {
      return supervise(this.containers, id, { attached: true, driver });
    }
    const forward = (sig: NodeJS.Signals) => {
      this.containers.updateState(id, { stopRequested: true });
      driver.kill(id, sig);
    };
    const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
    for (const s of signals) process.on(s, forward);
    try {
      await this.startDetached(id);
      const path = this.containers.path(id, "log.json");
      let offset = 0;
      const drain = () => {
        const r = readLogFrom(path, offset);
        offset = r.offset;
        for (const l of r.lines) (l.stream === "stderr" ? process.stderr : process.stdout).write(l.log);
      };
      for (;;) {
        drain();
        const st = this.containers.state(id);
        if (st.status !== "running" && !pidAlive(st.monitorPid)) {
          drain();
          return st.exitCode ?? 0;
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    } finally {
      for (const s of signals) process.off(s, forward);
    }
  }

  /** Starts a created container under a detached monitor process; resolves once it runs. */
  async startDetached(id: string): Promise<number> {
    const main = new URL("./monitor_main.js", import.meta.url).pathname;
    // The container's stdout and stderr are FIFOs: the monitor gets their write ends as its fds 1
    // and 2 (the runtime hands those to the container) and reads the other ends into the log.
    const fds: number[] = [];
    for (const name of ["stdout.fifo", "stderr.fifo"]) {
      const path = this.containers.path(id, name);
      rmSync(path, { force: true });
      const r = spawnSync("mkfifo", ["-m", "600", path], { encoding: "utf8" });
      if (r.status !== 0)
        throw new ManagerError("START_FAILED", `mkfifo ${path} failed: ${r.error?.message ?? r.stderr}`);
      fds.push(openSync(path, fsConstants.O_RDWR));
    }
    const child = spawn(process.execPath, [main, this.root, id], {
      detached: true,
      stdio: ["ignore", fds[0]!, fds[1]!, "ipc"],
      env: { ...process.env, VESSEL_ROOT: this.root },
    });
    for (const fd of fds) closeSync(fd);
    try {
      return await new Promise<number>((resolve, reject) => {
        child.on("message", (m: { type: string; pid?: number; message?: string; code?: string }) => {
          if (m.type === "started") resolve(m.pid ?? 0);
          else
            reject(
              new ManagerError(m.code ?? "START_FAILED", m.message ?? "container failed to start", { id }),
            );
        });
        // an "error" message may still be in flight when the exit is seen: let it land first
        child.on("exit", (code) =>
          setTimeout(
            () =>
              reject(
                new ManagerError(
                  "START_FAILED",
                  `monitor exited (${code}) before the container started: ${tail(this.containers.path(id, "monitor.log"))}`,
                  {
                    id,
                  },
                ),
              ),
            100,
          ),
        );
      });
    } finally {
      if (child.connected) child.disconnect();
      child.unref();
    }
  }

  /** Starts a stopped container again, detached, with its writable layer as it was (docker start). */
  async start(ref: string): Promise<string> {
    const { config } = this.view(ref);
    let state = this.containers.state(config.id);
    if (state.status !== "running" && pidAlive(state.monitorPid)) {
      await this.waitDone(config.id, 5000); // the last run's monitor is still tearing down
      state = this.containers.state(config.id);
    }
    if (state.status === "running" || pidAlive(state.monitorPid)) return config.id;
    this.containers.updateState(config.id, {
      status: "created",
      stopRequested: undefined,
      error: undefined,
      exitCode: undefined,
    });
    await this.startDetached(config.id);
    return config.id;
  }

  list(all: boolean): ContainerView[] {
    const out: ContainerView[] = [];
    for (const id of this.containers.ids()) {
      try {
        const view = { config: this.containers.config(id), state: this.containers.state(id) };
        if (all || view.state.status === "running") out.push(view);
      } catch {
        // a container being removed right now
      }
    }
    return out.sort((a, b) => b.config.created.localeCompare(a.config.created));
  }

  view(ref: string): ContainerView {
    const id = this.containers.resolve(ref);
    return { config: this.containers.config(id), state: this.containers.state(id) };
  }

  private async waitDone(id: string, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const s = this.containers.state(id);
      if (s.status !== "running" && !pidAlive(s.monitorPid)) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  /** Sends the stop signal, then SIGKILL after `timeoutSec`; waits for the monitor to finish. */
  async stop(ref: string, timeoutSec = 10): Promise<string> {
    const { config, state } = this.view(ref);
    if (state.status !== "running") return config.id;
    this.containers.updateState(config.id, { stopRequested: true });
    const driver = await this.driver();
    driver.kill(config.id, config.stopSignal);
    if (await this.waitDone(config.id, timeoutSec * 1000)) return config.id;
    driver.kill(config.id, "SIGKILL", true);
    if (!(await this.waitDone(config.id, 10_000))) {
      throw new ManagerError("STOP_FAILED", `container ${config.name} did not stop after SIGKILL`, {
        id: config.id,
      });
    }
    return config.id;
  }

  async kill(ref: string, signal = "SIGKILL"): Promise<string> {
    const { config, state } = this.view(ref);
    if (state.status !== "running") {
      throw new ManagerError("NOT_RUNNING", `container ${config.name} is not running`, { id: config.id });
    }
    this.containers.updateState(config.id, { stopRequested: true });
    const sig = /^\d+$/.test(signal)
      ? signal
      : signal.toUpperCase().startsWith("SIG")
        ? signal.toUpperCase()
        : `SIG${signal.toUpperCase()}`;
    if (!(await this.driver()).kill(config.id, sig))
      throw new ManagerError("NOT_RUNNING", `cannot signal container ${config.name}`);
    return config.id;
  }

  /** Removes a container; a running one only with `force` (killed first). Nothing of it is left. */
  async remove(ref: string, force = false): Promise<string> {
    const { config } = this.view(ref);
    const id = config.id;
    let state = this.containers.state(id);
    // an exited container's monitor may still be tearing down: give it a moment
    if (state.status !== "running" && pidAlive(state.monitorPid)) {
      await this.waitDone(id, 5000);
      state = this.containers.state(id);
    }
    if (state.status === "running" || pidAlive(state.monitorPid)) {
      if (!force) {
        throw new ManagerError("RUNNING", `container ${config.name} is running: stop it first or use rm -f`, {
          id,
        });
      }
      this.containers.updateState(id, { stopRequested: true, status: "removing" });
      (await this.driver()).kill(id, "SIGKILL", true);
      if (!(await this.waitDone(id, 15_000)) && state.monitorPid) {
        try {
          process.kill(state.monitorPid, "SIGKILL");
        } catch {
          // gone
        }
      }
    }
    await teardown(this.containers, id, await this.driver());
    rmSync(this.containers.path(id), { recursive: true, force: true });
    return id;
  }

  /** Runs a command in a running container with this process's stdio; resolves with its status. */
  async exec(
    ref: string,
    args: string[],
    opts: { tty?: boolean; interactive?: boolean; env?: string[]; user?: string; workdir?: string } = {},
  ): Promise<number> {
    const { config, state } = this.view(ref);
    if (state.status !== "running") {
      throw new ManagerError("NOT_RUNNING", `container ${config.name} is not running`, { id: config.id });
    }
    if (args.length === 0) throw new UsageError("NO_COMMAND", "exec needs a command");
    const user = resolveUser(this.containers.path(config.id, "bundle", "rootfs"), opts.user ?? config.user);
    const env = mergeEnv(config.env, [`HOME=${user.home}`, `HOSTNAME=${config.hostname}`], opts.env ?? []);
    return (await this.driver()).exec(config.id, {
      args,
      env,
      user: { uid: user.uid, gid: user.gid },
      cwd: opts.workdir ?? config.cwd,
      tty: opts.tty ?? false,
      stdin: opts.interactive ?? false,
    });
  }

  /**
   * Connects this process's terminal to a running container (docker attach): see attach.ts.
   * Resolves when the detach keys are typed (the container keeps running) or with the
   * container's exit status.
   */
  attach(ref: string, opts: { detachKeys?: string; noStdin?: boolean } = {}): Promise<AttachOutcome> {
    return attachContainer(this, ref, opts);
  }

  logPath(ref: string): string {
    return this.containers.path(this.containers.resolve(ref), "log.json");
  }

  inspect(ref: string): Record<string, unknown> {
    const { config: c, state: s } = this.view(ref);
    const health = c.healthcheck ? readHealth(this.containers, c.id) : undefined;
    return {
      Id: c.id,
      Name: c.name,
      Created: c.created,
      Image: c.imageId,
      ImageName: c.image,
      Path: c.args[0],
      Args: c.args.slice(1),
      State: {
        Status: s.status,
        Running: s.status === "running",
        Pid: s.pid ?? 0,
        ExitCode: s.exitCode ?? 0,
        Error: s.error ?? "",
        StartedAt: s.startedAt ?? "",
        FinishedAt: s.finishedAt ?? "",
        RestartCount: s.restartCount,
        MonitorPid: s.monitorPid ?? 0,
        ...(health ? { Health: health } : {}),
      },
      Config: {
        Hostname: c.hostname,
        User: c.user,
        Env: c.env,
        Cmd: c.args,
        WorkingDir: c.cwd,
        Tty: c.tty,
        OpenStdin: c.interactive,
        Labels: c.labels,
        StopSignal: c.stopSignal,
        ...(c.healthcheck ? { Healthcheck: c.healthcheck } : {}),
      },
      HostConfig: {
        NetworkMode: c.network,
        AutoRemove: c.autoRemove,
        ReadonlyRootfs: c.readOnly,
        Memory: c.memory ?? 0,
        NanoCpus: c.cpus !== undefined ? Math.round(c.cpus * 1e9) : 0,
        PidsLimit: c.pidsLimit ?? 0,
        RestartPolicy: { Name: c.restart.name, MaximumRetryCount: c.restart.maxRetries },
        PortBindings: Object.fromEntries(
          c.ports.map((p) => [
            `${p.containerPort}/${p.protocol ?? "tcp"}`,
            [{ HostIp: p.hostIp, HostPort: String(p.hostPort) }],
          ]),
        ),
      },
      Mounts: c.volumes.map((v) => ({
        Type: v.named ? "volume" : "bind",
        Name: v.named ? v.source : undefined,
        Source: v.named ? join(this.root, "volumes", v.source, "_data") : v.source,
        Destination: v.target,
        RW: !v.readonly,
      })),
      NetworkSettings: this.networkSettings(c, s),
      GraphDriver: {
        Name: "overlay",
        Data: {
          UpperDir: this.containers.path(c.id, "upper"),
          MergedDir: this.containers.path(c.id, "bundle", "rootfs"),
        },
      },
    };
  }

  private networkSettings(c: ContainerConfig, s: ContainerState): Record<string, unknown> {
    const user = isBuiltin(c.network) ? undefined : this.networks.find(c.network);
    const gateway = s.ip === undefined ? "" : (user?.gateway ?? defaultBridge().gateway);
    return {
      IPAddress: s.ip ?? "",
      Gateway: gateway,
      Networks: {
        [c.network]: {
          NetworkID: user?.id ?? "",
          IPAddress: s.ip ?? "",
          Gateway: gateway,
          Aliases: c.networkAliases ?? [],
        },
      },
    };
  }

  /** One sample of cgroup counters (v1 layout, or v2 when the host has it). */
  stats(ref: string): {
    id: string;
    name: string;
    memory: number;
    memoryLimit: number;
    cpuNs: number;
    pids: number;
  } {
    const { config } = this.view(ref);
    const cg = cgroupsPath(config.id);
    const num = (...paths: string[]): number => {
      for (const p of paths) {
        try {
          const t = readFileSync(p, "utf8").trim();
          if (t === "max") return Number.POSITIVE_INFINITY;
          if (/^usage_usec/.test(t)) return Number(/usage_usec (\d+)/.exec(t)![1]) * 1000;
          return Number(t);
        } catch {
          // try the next layout
        }
      }
      return 0;
    };
    return {
      id: config.id,
      name: config.name,
      memory: num(`/sys/fs/cgroup/memory${cg}/memory.usage_in_bytes`, `/sys/fs/cgroup${cg}/memory.current`),
      memoryLimit: num(`/sys/fs/cgroup/memory${cg}/memory.limit_in_bytes`, `/sys/fs/cgroup${cg}/memory.max`),
      cpuNs: num(
        `/sys/fs/cgroup/cpuacct${cg}/cpuacct.usage`,
        `/sys/fs/cgroup/cpu,cpuacct${cg}/cpuacct.usage`,
        `/sys/fs/cgroup${cg}/cpu.stat`,
      ),
      pids: num(`/sys/fs/cgroup/pids${cg}/pids.current`, `/sys/fs/cgroup${cg}/pids.current`),
    };
  }

  /** Removes every container that is not running. */
  async prune(): Promise<string[]> {
    const removed: string[] = [];
    for (const v of this.list(true)) {
      if (v.state.status === "running" || pidAlive(v.state.monitorPid)) continue;
      removed.push(await this.remove(v.config.id, false));
    }
    return removed;
  }

  /** What a container left on the host: mounts, network, cgroups, monitor (empty when clean). */
  leftovers(id: string, monitorPid?: number): string[] {
    const out: string[] = [];
    if (isMounted(this.containers.path(id, "bundle", "rootfs"))) out.push("overlay mount");
    out.push(...networkLeftovers(id));
    out.push(...cgroupLeftovers(cgroupsPath(id)).map((p) => `cgroup ${p}`));
    if (monitorPid !== undefined && pidAlive(monitorPid)) out.push(`monitor process ${monitorPid}`);
    if (existsSync(this.containers.path(id))) out.push("state directory");
    return out;
  }

  imageInUse(imageId: string): boolean {
    return this.list(true).some((v) => v.config.imageId === imageId);
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, "utf8").trim().split("\n").slice(-5).join("\n");
  } catch {
    return "";
  }
}
