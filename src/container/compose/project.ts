import { createHash } from "node:crypto";
import { createSocket } from "node:dgram";
import { existsSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { baseImage, build, canProvideImage } from "../build/builder.js";
import { readHealth } from "../manager/health.js";
import { type LogLine, readLog, readLogFrom } from "../manager/log.js";
import type { ContainerView, Manager, RunRequest } from "../manager/manager.js";
import { pidAlive } from "../manager/state.js";
import { ComposeError } from "./errors.js";
import { type ComposeFile, type ComposeService, type ServicePort, startOrder } from "./file.js";

/**
 * A compose project over the container manager: `up` builds or finds each service's image,
 * makes the project's network (a user network, `<project>_default`, on which every service is
 * reachable by its service name: network/networks.ts), and starts the services in depends_on
 * order, waiting for each dependency's condition; `down` undoes it. Containers carry compose's
 * labels (com.docker.compose.project/service), which is how `ps`, `logs` and `down` find them
 * without any state of their own.
 *
 * Nothing half-started: every image and host port is checked before the first container is
 * made, and when a service fails to start, the containers this `up` made and the network it made
 * are removed again before the error is reported.
 */

export const LABEL_PROJECT = "com.docker.compose.project";
export const LABEL_SERVICE = "com.docker.compose.service";
export const LABEL_NUMBER = "com.docker.compose.container-number";
export const LABEL_HASH = "com.docker.compose.config-hash";

export type Report = (line: string) => void;

export interface UpOptions {
  /** Build images of services with `build` even when they exist (up --build). */
  build?: boolean;
  report?: Report;
  /** Output of build steps. */
  output?: (chunk: string) => void;
  /** How long to wait for a dependency to be healthy or done (default 120 s). */
  waitMs?: number;
}

export class ComposeProject {
  readonly name: string;

  constructor(
    readonly manager: Manager,
    readonly file: ComposeFile | undefined,
    name: string,
  ) {
    this.name = name;
  }

  get networkName(): string {
    return `${this.name}_default`;
  }

  private get services(): ComposeService[] {
    if (this.file === undefined)
      throw new ComposeError("COMPOSE_NO_FILE", "this command needs the compose file (-f FILE)");
    return this.file.services;
  }

  containerName(s: ComposeService): string {
    return s.containerName ?? `${this.name}-${s.name}-1`;
  }

  imageName(s: ComposeService): string {
    return s.image ?? `${this.name}-${s.name}`;
  }

  volumeName(v: string): string {
    return `${this.name}_${v}`;
  }

  /** The project's containers (any state), oldest first. */
  containers(): ContainerView[] {
    return this.manager
      .list(true)
      .filter((v) => v.config.labels[LABEL_PROJECT] === this.name)
      .sort((a, b) => a.config.created.localeCompare(b.config.created));
  }

  /** What `create` is asked for a service: same file and image give the same hash. */
  private request(s: ComposeService): RunRequest {
    const image = this.imageName(s);
    const [entry, ...entryArgs] = s.entrypoint ?? [];
    const req: RunRequest = {
      image,
      args: s.entrypoint !== undefined ? [...entryArgs, ...(s.command ?? [])] : (s.command ?? []),
      name: this.containerName(s),
      detach: true,
      env: s.environment,
      envFiles: s.envFiles,
      volumes: s.volumes.map(
        (v) => `${v.named ? this.volumeName(v.source) : v.source}:${v.target}${v.readonly ? ":ro" : ""}`,
      ),
      ports: s.ports.map((p) => p.spec),
      network: this.networkName,
      networkAliases: [s.name],
      restart: s.restart === "unless-stopped" ? "always" : (s.restart ?? "no"),
      labels: { ...s.labels, [LABEL_PROJECT]: this.name, [LABEL_SERVICE]: s.name, [LABEL_NUMBER]: "1" },
      ...(entry !== undefined ? { entrypoint: entry } : {}),
      ...(s.workingDir !== undefined ? { workdir: s.workingDir } : {}),
      ...(s.user !== undefined ? { user: s.user } : {}),
      ...(s.hostname !== undefined ? { hostname: s.hostname } : {}),
      ...(s.healthcheck !== undefined ? { healthcheck: s.healthcheck } : {}),
    };
    const imageId = this.manager.images.find(image)?.id ?? "";
    const hash = createHash("sha256").update(JSON.stringify({ req, imageId })).digest("hex");
    req.labels = { ...req.labels, [LABEL_HASH]: hash };
    return req;
  }

  /** Builds (or finds) every service's image; nothing is started until all are there. */
  private async images(opts: UpOptions): Promise<void> {
    const report = opts.report ?? (() => undefined);
    for (const s of this.services) {
      const image = this.imageName(s);
      if (s.build && (opts.build || this.manager.images.find(image) === undefined)) {
        report(`Service ${s.name}  Building ${image}`);
        try {
          await build(this.manager.images, {
            contextDir: s.build.context,
            tag: image,
            buildArgs: new Map(Object.entries(s.build.args)),
            progress: (l) => report(`  ${s.name}: ${l}`),
            ...(s.build.dockerfile ? { file: s.build.dockerfile } : {}),
            ...(s.build.target ? { target: s.build.target } : {}),
            ...(opts.output ? { output: opts.output } : {}),
          });
        } catch (err) {
          throw new ComposeError(
            "COMPOSE_UP_FAILED",
            `service "${s.name}": building ${image} failed`,
            { service: s.name },
            err,
          );
        }
        report(`Service ${s.name}  Built`);
      } else if (!s.build) {
        if (!canProvideImage(this.manager.images, image))
          throw new ComposeError(
            "COMPOSE_UP_FAILED",
            `service "${s.name}": no image "${image}" here (build it with \`vessel image build -t ${image} DIR\`, load it with \`vessel image load\`, or give the service a build:)`,
            { service: s.name, image },
          );
        await baseImage(this.manager.images, image, (l) => report(`  ${s.name}: ${l}`));
      }
    }
  }

  /**
   * Starts the project: images, network, then each service after its dependencies. A service
   * whose container runs with the same configuration is left alone; one that changed (or
   * stopped) is made again.
   */
  async up(opts: UpOptions = {}): Promise<ContainerView[]> {
    const report = opts.report ?? (() => undefined);
    const order = startOrder(this.file!);
    await this.images(opts);
    const existing = new Map(this.containers().map((v) => [v.config.labels[LABEL_SERVICE] ?? "", v]));
    const plans = order.map((s) => {
      const req = this.request(s);
      const have = existing.get(s.name);
      const keep =
        have !== undefined &&
        have.state.status === "running" &&
        have.config.labels[LABEL_HASH] === req.labels![LABEL_HASH];
      return { s, req, have, keep };
    });
    // host ports of the containers to (re)make must be free, unless an old container of the
    // same service, about to be replaced, holds them
    const replaced = new Set(plans.filter((p) => p.have && !p.keep).map((p) => p.have!.config.id));
    for (const p of plans) {
      if (p.keep) continue;
      for (const port of p.s.ports) {
        const holder = this.manager
          .list(false)
          .find((v) =>
            v.config.ports.some((q) => q.hostPort === port.hostPort && q.protocol === port.protocol),
          );
        if (holder && replaced.has(holder.config.id)) continue;
        await checkPortFree(port, p.s.name, holder?.config.name);
      }
    }
    const made: string[] = [];
    let madeNetwork = false;
    try {
      if (this.manager.networks.find(this.networkName) === undefined) {
        this.manager.networks.create({
          name: this.networkName,
          labels: { [LABEL_PROJECT]: this.name, "com.docker.compose.network": "default" },
        });
        madeNetwork = true;
        report(`Network ${this.networkName}  Created`);
      }
      for (const p of plans) {
        const cname = this.containerName(p.s);
        if (p.keep) {
          report(`Container ${cname}  Running`);
          continue;
        }
        for (const d of p.s.dependsOn)
          await this.waitFor(d.service, d.condition, p.s.name, opts.waitMs ?? 120_000);
        if (p.have) {
          await this.manager.remove(p.have.config.id, true);
          report(`Container ${cname}  Removed (configuration changed or not running)`);
        }
        const cfg = this.manager.create(p.req);
        made.push(cfg.id);
        report(`Container ${cname}  Created`);
        try {
          await this.manager.startDetached(cfg.id);
        } catch (err) {
          throw new ComposeError(
            "COMPOSE_UP_FAILED",
            `service "${p.s.name}" failed to start`,
            { service: p.s.name },
            err,
          );
        }
        report(`Container ${cname}  Started`);
      }
    } catch (err) {
      // nothing half-started: what this up made goes again
      for (const id of made.reverse()) await this.manager.remove(id, true).catch(() => undefined);
      if (madeNetwork) {
        try {
          this.manager.networks.remove(this.networkName);
        } catch {
          // still in use by a container we could not remove: `down` gets it
        }
      }
      if (made.length > 0 || madeNetwork)
        report(
          `Removed what this up had started (${made.length} container(s)${madeNetwork ? " and the network" : ""})`,
        );
      throw err;
    }
    return this.containers();
  }

  /** Waits until service `dep` meets `condition` (compose's depends_on conditions). */
  private async waitFor(dep: string, condition: string, who: string, waitMs: number): Promise<void> {
    const end = Date.now() + waitMs;
    for (;;) {
      const v = this.containers().find((c) => c.config.labels[LABEL_SERVICE] === dep);
      const fail = (why: string) =>
        new ComposeError("COMPOSE_UP_FAILED", `service "${who}" depends on "${dep}", which ${why}`, {
          service: who,
          dependency: dep,
        });
      if (v === undefined) throw fail("has no container");
      if (condition === "service_started") return;
      if (condition === "service_completed_successfully") {
        if (v.state.status === "exited" && !pidAlive(v.state.monitorPid)) {
          if ((v.state.exitCode ?? 0) === 0) return;
          throw fail(`exited with ${v.state.exitCode}`);
        }
      } else {
        if (!v.config.healthcheck)
          throw fail("has no healthcheck (give it one, or use condition: service_started)");
        const h = readHealth(this.manager.containers, v.config.id);
        if (h?.Status === "healthy") return;
        if (h?.Status === "unhealthy") throw fail("is unhealthy");
        if (v.state.status !== "running") throw fail(`is not running (${v.state.status})`);
      }
      if (Date.now() > end) throw fail(`did not get there within ${Math.round(waitMs / 1000)} s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Stops and removes the project's containers (dependents first), its network and, with `volumes`, its named volumes. */
  async down(opts: { volumes?: boolean; timeoutSec?: number; report?: Report } = {}): Promise<void> {
    const report = opts.report ?? (() => undefined);
    const views = this.containers();
    const rank = new Map((this.file ? startOrder(this.file) : []).map((s, i) => [s.name, i]));
    views.sort(
      (a, b) =>
        (rank.get(b.config.labels[LABEL_SERVICE] ?? "") ?? -1) -
        (rank.get(a.config.labels[LABEL_SERVICE] ?? "") ?? -1),
    );
    for (const v of views) {
      await this.manager.stop(v.config.id, opts.timeoutSec ?? 10);
      report(`Container ${v.config.name}  Stopped`);
      await this.manager.remove(v.config.id, true);
      report(`Container ${v.config.name}  Removed`);
    }
    if (this.manager.networks.find(this.networkName)) {
      this.manager.networks.remove(this.networkName);
      report(`Network ${this.networkName}  Removed`);
    }
    if (opts.volumes && this.file) {
      for (const v of this.file.volumes) {
        const dir = join(this.manager.root, "volumes", this.volumeName(v));
        if (!existsSync(dir)) continue;
        rmSync(dir, { recursive: true, force: true });
        report(`Volume ${this.volumeName(v)}  Removed`);
      }
    }
  }

  /**
   * The logs of the project's containers (or of `services`), each line with its container's name,
   * in time order; with `follow`, new lines as they come until every container has exited or
   * `stop` resolves.
   */
  async logs(
    emit: (container: string, line: LogLine) => void,
    opts: { services?: string[]; follow?: boolean; tail?: number; stop?: Promise<unknown> } = {},
  ): Promise<void> {
    const pick = (v: ContainerView) =>
      !opts.services?.length || opts.services.includes(v.config.labels[LABEL_SERVICE] ?? "");
    const offsets = new Map<string, number>();
    const batch: [string, LogLine][] = [];
    for (const v of this.containers().filter(pick)) {
      const { lines, offset } = readLog(this.manager.logPath(v.config.id), opts.tail);
      offsets.set(v.config.id, offset);
      for (const l of lines) batch.push([v.config.name, l]);
    }
    const flush = () => {
      batch.sort((a, b) => a[1].time.localeCompare(b[1].time));
      for (const [c, l] of batch) emit(c, l);
      batch.length = 0;
    };
    flush();
    if (!opts.follow) return;
    let stopped = false;
    void opts.stop?.then(() => {
      stopped = true;
    });
    for (;;) {
      await new Promise((r) => setTimeout(r, 100));
      const views = this.containers().filter(pick);
      for (const v of views) {
        const r = readLogFrom(this.manager.logPath(v.config.id), offsets.get(v.config.id) ?? 0);
        offsets.set(v.config.id, r.offset);
        for (const l of r.lines) batch.push([v.config.name, l]);
      }
      flush();
      const allDone = views.every((v) => v.state.status !== "running" && !pidAlive(v.state.monitorPid));
      if (stopped || allDone) return;
    }
  }

  /** Stops the project's running containers (up's Ctrl-C). */
  async stop(timeoutSec = 10): Promise<void> {
    await Promise.all(
      this.containers()
        .filter((v) => v.state.status === "running")
        .map((v) => this.manager.stop(v.config.id, timeoutSec)),
    );
  }
}

/** Fails with a message naming the service and port when the host port cannot be bound. */
async function checkPortFree(p: ServicePort, service: string, holder: string | undefined): Promise<void> {
  const clash = (why: string) =>
    new ComposeError(
      "COMPOSE_PORT_CLASH",
      `service "${service}" (compose file line ${p.line}): host port ${p.hostIp}:${p.hostPort}/${p.protocol} ${why}; choose another host port`,
      { service, port: p.hostPort, line: p.line },
    );
  if (holder !== undefined) throw clash(`is published by container ${holder}`);
  const err = await new Promise<Error | undefined>((resolve) => {
    if (p.protocol === "udp") {
      const s = createSocket("udp4");
      s.once("error", (e) => {
        s.close();
        resolve(e);
      });
      s.bind(p.hostPort, p.hostIp, () => s.close(() => resolve(undefined)));
    } else {
      const s = createServer();
      s.once("error", resolve);
      s.listen(p.hostPort, p.hostIp, () => s.close(() => resolve(undefined)));
    }
  });
  if (err) throw clash(`is in use on this host (${(err as NodeJS.ErrnoException).code ?? err.message})`);
}
