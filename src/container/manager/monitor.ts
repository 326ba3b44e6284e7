import {
  constants as fsConstants,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { Socket } from "node:net";
import { join } from "node:path";
import { ImageStore } from "../image/store.js";
import { connectContainer, disconnectContainer } from "../network/container_network.js";
import { type PortProxy, startPortProxies } from "../network/port_proxy.js";
import { AttachHub, attachSocketPath } from "./attach.js";
import { callerWindowSize } from "./console.js";
import { ManagerError } from "./errors.js";
import { execProbe, HealthMonitor, probeArgv, writeHealth } from "./health.js";
import { LogWriter } from "./log.js";
import { buildOciConfig, cgroupsPath } from "./oci_config.js";
import { mountRootfs, removeCgroups, unmount } from "./rootfs.js";
import { defaultDriver, type RuntimeDriver } from "./runtime_driver.js";
import { bootId, type ContainerConfig, type ContainerStore, pidAlive } from "./state.js";

/**
 * The per-container monitor (the role of conmon): prepares the root filesystem, network and
 * published ports, runs the container through the runtime's foreground `run`, holds its stdio
 * and writes it to the log, records the exit code, applies the restart policy, and tears down
 * when the container is done. It runs inside the CLI for an attached `run`, and as its own
 * detached process (monitor_main.ts) for `run -d`, so a detached container outlives the CLI.
 */

export interface SuperviseOptions {
  attached: boolean;
  /** Called once the first start succeeded (the runtime wrote the init pid). */
  onStarted?: (pid: number) => void;
  driver?: RuntimeDriver;
  /**
   * FIFOs that are this process's fds 1 and 2 (the detached monitor): the container inherits
   * them, and the monitor reads their other end into the log.
   */
  fifos?: { stdout: string; stderr: string };
}

interface Prepared {
  bundle: string;
  proxies: PortProxy[];
  ip?: string;
}

export function volumeDir(root: string, name: string): string {
  return join(root, "volumes", name, "_data");
}

export async function prepare(
  store: ContainerStore,
  cfg: ContainerConfig,
  runtimeTerminal: boolean,
): Promise<Prepared> {
  const root = store.root;
  const images = new ImageStore(root);
  const img = images.resolve(cfg.imageId);
  const layers = await images.layerDirs(img);
  const bundle = store.path(cfg.id, "bundle");
  const rootfs = join(bundle, "rootfs");
  mountRootfs(layers, store.path(cfg.id, "upper"), store.path(cfg.id, "work"), rootfs);
  const etc = store.path(cfg.id, "etc");
  mkdirSync(etc, { recursive: true });
  // the namespace and /etc/hosts (network/container_network.ts), then the published ports
  const hostsFile = join(etc, "hosts");
  const { netnsPath, ip } = connectContainer(
    root,
    cfg,
    { dir: store.path(cfg.id), hostsFile },
    (id) => existsSync(store.path(id, "container.json")),
    process.pid,
    pidAlive,
  );
  if (ip !== undefined) store.updateState(cfg.id, { ip });
  const proxies = ip !== undefined ? await startPortProxies(cfg.ports, ip) : [];
  try {
    return {
      ...writeBundle(store, cfg, runtimeTerminal, netnsPath, hostsFile),
      proxies,
      ...(ip ? { ip } : {}),
    };
  } catch (err) {
    for (const p of proxies) p.close();
    throw err;
  }
}

/** The rest of prepare(): /etc files, volumes and the OCI config of the bundle. */
function writeBundle(
  store: ContainerStore,
  cfg: ContainerConfig,
  runtimeTerminal: boolean,
  netnsPath: string | undefined,
  hostsFile: string,
): { bundle: string } {
  const root = store.root;
  const bundle = store.path(cfg.id, "bundle");
  const rootfs = join(bundle, "rootfs");
  const etc = store.path(cfg.id, "etc");
  writeFileSync(join(etc, "hostname"), `${cfg.hostname}\n`);
  try {
    copyFileSync("/etc/resolv.conf", join(etc, "resolv.conf"));
  } catch {
    writeFileSync(join(etc, "resolv.conf"), "");
  }
  const volumeSources = cfg.volumes.map((v) => {
    const src = v.named ? volumeDir(root, v.source) : v.source;
    mkdirSync(src, { recursive: true });
    return src;
  });
  const consoleSize = cfg.tty ? callerWindowSize() : undefined;
  const spec = buildOciConfig({
    cfg,
    rootfs,
    ...(netnsPath !== undefined ? { netnsPath } : {}),
    etcFiles: { hosts: hostsFile, hostname: join(etc, "hostname"), resolv: join(etc, "resolv.conf") },
    volumeSources,
    runtimeTerminal,
    ...(consoleSize ? { consoleSize } : {}),
  });
  writeFileSync(join(bundle, "config.json"), JSON.stringify(spec, null, 2));
  return { bundle };
}

/** Undoes prepare(): runtime state, overlay mount, network, ports, cgroups. Idempotent. */
export async function teardown(store: ContainerStore, id: string, driver?: RuntimeDriver): Promise<void> {
  try {
    await (driver ?? (await defaultDriver(store.root))).delete(id);
  } catch {
    // no runtime: nothing of it to delete
  }
  unmount(store.path(id, "bundle", "rootfs"));
  // what networking made depends on the mode; without a readable config, undo everything
  let cfg: ContainerConfig | undefined;
  try {
    cfg = store.config(id);
  } catch {
    cfg = undefined;
  }
  disconnectContainer(store.root, id, store.path(id), cfg);
  removeCgroups(cgroupsPath(id));
}

function readRuntimeError(logFile: string): string | undefined {
  if (!existsSync(logFile)) return undefined;
  const msgs: string[] = [];
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    if (line === "") continue;
    try {
      const j = JSON.parse(line) as { level?: string; msg?: string };
      if (j.level === "error" && j.msg) msgs.push(j.msg);
    } catch {
      msgs.push(line);
    }
  }
  return msgs.length ? msgs.join("; ") : undefined;
}

async function waitForPid(exit: Promise<number>, pidFile: string): Promise<number | undefined> {
  let exited = false;
  void exit.then(() => {
    exited = true;
  });
  for (let i = 0; i < 12000; i++) {
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, "utf8").trim());
      if (pid > 0) return pid;
    }
    if (exited)
      return existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").trim()) || undefined : undefined;
    await new Promise((r) => setTimeout(r, 5));
  }
  return undefined;
}

/** Reads a FIFO without blocking a thread (a pipe handle on the event loop). */
function openFifo(path: string, onData: (b: Buffer) => void): { socket: Socket; last: () => number } {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  const socket = new Socket({ fd, readable: true, writable: false });
  let lastData = Date.now();
  socket.on("data", (b: Buffer) => {
    lastData = Date.now();
    onData(b);
  });
  socket.on("error", () => undefined);
  return { socket, last: () => lastData };
}

/** Runs the container until it is done (restarts included) and returns its last exit code. */
export async function supervise(store: ContainerStore, id: string, opts: SuperviseOptions): Promise<number> {
  const cfg = store.config(id);
  const driver = opts.driver ?? (await defaultDriver(store.root));
  let prepared: Prepared;
  try {
    prepared = await prepare(store, cfg, driver.allocatesTerminal);
  } catch (err) {
    await teardown(store, id, driver);
    store.updateState(id, {
      status: "exited",
      exitCode: 125,
      error: (err as Error).message,
      finishedAt: new Date().toISOString(),
    });
    throw err;
  }
  const log = new LogWriter(store.path(id, "log.json"));
  const fifoReaders = opts.fifos
    ? [
        openFifo(opts.fifos.stdout, (b) => log.write("stdout", b)),
        openFifo(opts.fifos.stderr, (b) => log.write("stderr", b)),
      ]
    : [];
  // a detached -t container: this monitor keeps its pty and serves `attach` (attach.ts)
  const hub =
    !opts.attached && cfg.tty && driver.holdsTerminal
      ? await AttachHub.listen(attachSocketPath(id), (b) => log.write("stdout", b))
      : undefined;
  const pidFile = store.path(id, "pid");
  const runtimeLog = store.path(id, "runtime.log");
  let health: HealthMonitor | undefined;
  let started = false;
  let exitCode = 0;
  const forward = (sig: NodeJS.Signals) => {
    store.updateState(id, { stopRequested: true });
    driver.kill(id, sig);
  };
  const signals: NodeJS.Signals[] = opts.attached ? ["SIGINT", "SIGTERM", "SIGHUP"] : ["SIGTERM"];
  for (const s of signals) process.on(s, forward);
  // Attached: tee the container's output to the terminal and the log when the runtime can give
  // pipes; otherwise (a terminal, or the library runtime) the container writes to the terminal.
  const pipe = opts.attached && !cfg.tty && driver.canPipe;
  try {
    for (;;) {
      rmSync(pidFile, { force: true });
      rmSync(runtimeLog, { force: true });
      const handle = driver.run(id, prepared.bundle, {
        pidFile,
        logFile: runtimeLog,
        stdio: pipe ? "pipe" : "inherit",
        stdin: opts.attached && cfg.interactive,
        tty: cfg.tty && (opts.attached || hub !== undefined),
        ...(hub ? { console: (master: number) => hub.serve(master) } : {}),
      });
      handle.stdout?.on("data", (b: Buffer) => {
        log.write("stdout", b);
        process.stdout.write(b);
      });
      handle.stderr?.on("data", (b: Buffer) => {
        log.write("stderr", b);
        process.stderr.write(b);
      });
      const pid = await waitForPid(handle.exit, pidFile);
      health?.stop();
      health =
        pid !== undefined && probeArgv(cfg.healthcheck) !== undefined
          ? new HealthMonitor({
              config: cfg.healthcheck!,
              probe: execProbe(store.root, id),
              publish: (h) => writeHealth(store, id, h),
            })
          : undefined;
      health?.start();
      if (pid !== undefined) {
        store.updateState(id, {
          status: "running",
          pid,
          monitorPid: process.pid,
          startedAt: new Date().toISOString(),
          bootId: bootId(),
        });
        if (!started) {
          started = true;
          opts.onStarted?.(pid);
        }
      }
      exitCode = await handle.exit;
      health?.stop();
      hub?.exited(exitCode);
      // the FIFOs may still hold the container's last output
      for (let i = 0; i < 100 && fifoReaders.some((f) => Date.now() - f.last() < 30); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      if (fifoReaders.length) await new Promise((r) => setTimeout(r, 20));
      log.flush();
      const runtimeError =
        pid === undefined
          ? (readRuntimeError(runtimeLog) ?? `runtime exited with ${exitCode} before starting`)
          : undefined;
      const state = store.updateState(id, {
        status: "exited",
        exitCode,
        finishedAt: new Date().toISOString(),
        pid: undefined,
        error: runtimeError,
      });
      if (!started)
        throw new ManagerError("START_FAILED", `container failed to start: ${runtimeError}`, {
          id,
          exitCode,
        });
      const policy = cfg.restart;
      const again =
        !state.stopRequested &&
        ((policy.name === "on-failure" && exitCode !== 0) || policy.name === "always") &&
        (policy.maxRetries === 0 || state.restartCount < policy.maxRetries);
      if (!again) break;
      store.updateState(id, {
        restartCount: state.restartCount + 1,
        status: "running",
        monitorPid: process.pid,
      });
      // docker's back-off: 100 ms doubling, capped here at 2 s so tests stay quick
      await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** state.restartCount, 2000)));
    }
  } finally {
    health?.stop();
    hub?.close();
    log.close();
    for (const f of fifoReaders) f.socket.destroy();
    for (const p of prepared.proxies) p.close();
    for (const s of signals) process.off(s, forward);
    await teardown(store, id, driver);
    if (cfg.autoRemove) rmSync(store.path(id), { recursive: true, force: true });
  }
  return exitCode;
}

export { pidAlive };
