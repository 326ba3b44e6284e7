import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  chownSync,
  utimesSync,
  chmodSync,
} from "node:fs";
import { dirname, join, posix, relative, resolve } from "node:path";
import * as tar from "tar";
import { DEFAULT_PATH } from "../image/archive.js";
import { sha256Of } from "../image/digest.js";
import { ImageError } from "../image/errors.js";
import { findOpaqueDirs } from "../image/layer.js";
import { type Descriptor, type ExecConfig, hostArchitecture, type ImageConfig } from "../image/oci_types.js";
import type { ImageRecord, ImageStore } from "../image/store.js";
import { writeTreeTar } from "../image/tar_writer.js";
import { DEFAULT_CAPS, resolveUser } from "../manager/oci_config.js";
import { mountRootfs, removeCgroups, unmount } from "../manager/rootfs.js";
import { buildDriver, type RuntimeDriver } from "../manager/runtime_driver.js";
import { buildBusyboxImage, buildDebianImage, type Progress } from "./base_images.js";
import { type Instruction, parseBuildFile } from "./dockerfile.js";

/**
 * `vessel image build`: runs a build file step by step. A RUN step runs in a container made by the
 * OCI runtime over the layers so far plus a fresh overlay upper directory; the upper directory is
 * then the step's layer (overlay whiteouts become OCI whiteouts). COPY and ADD stage their files in
 * a directory that becomes the layer. Every step is cached by (parent state, instruction, inputs):
 * an unchanged step with unchanged inputs is not run again.
 */

export interface BuildOptions {
  contextDir: string;
  file?: string;
  tag?: string;
  buildArgs?: Map<string, string>;
  noCache?: boolean;
  progress?: Progress;
  /** Output of RUN steps, as it comes. */
  output?: (chunk: string) => void;
  driver?: RuntimeDriver;
}

interface CacheEntry {
  layer?: string;
  config: string;
}

interface BuildState {
  key: string;
  layers: Descriptor[];
  config: ImageConfig;
}

function cachePath(store: ImageStore): string {
  return join(store.root, "build-cache.json");
}

function loadCache(store: ImageStore): Record<string, CacheEntry> {
  try {
    return JSON.parse(readFileSync(cachePath(store), "utf8")) as Record<string, CacheEntry>;
  } catch {
    return {};
  }
}

function saveCache(store: ImageStore, cache: Record<string, CacheEntry>): void {
  const t = store.tempPath("cache");
  writeFileSync(t, JSON.stringify(cache));
  renameSync(t, cachePath(store));
}

/** Hash of files named by COPY/ADD sources: relative paths, modes, link targets and contents. */
function hashSources(context: string, sources: string[]): string {
  const h = createHash("sha256");
  const visit = (abs: string, rel: string) => {
    const st = lstatSync(abs);
    h.update(`${rel}\0${st.mode}\0`);
    if (st.isDirectory()) {
      for (const n of readdirSync(abs).sort()) visit(join(abs, n), `${rel}/${n}`);
    } else if (st.isSymbolicLink()) {
      h.update(readlinkSync(abs));
    } else if (st.isFile()) {
      h.update(readFileSync(abs));
    }
  };
  for (const s of sources) for (const abs of expandSource(context, s)) visit(abs, relative(context, abs));
  return h.digest("hex");
}

/** A COPY source: a path inside the context, with `*` and `?` wildcards in its last part. */
function expandSource(context: string, source: string): string[] {
  const abs = resolve(context, source.replace(/^\/+/, ""));
  if (abs !== context && !abs.startsWith(`${context}/`)) {
    throw new ImageError("BUILD_FILE", `COPY source "${source}" is outside the build context ${context}`);
  }
  const base = posix.basename(abs);
  if (/[*?]/.test(base)) {
    const dir = dirname(abs);
    const re = new RegExp(
      `^${base
        .replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*/g, ".*")
        .replace(/\?/g, ".")}$`,
    );
    const hits = existsSync(dir)
      ? readdirSync(dir)
          .filter((n) => re.test(n))
          .sort()
          .map((n) => join(dir, n))
      : [];
    if (hits.length === 0)
      throw new ImageError("BUILD_FILE", `COPY source "${source}" matches no file in the build context`);
    return hits;
  }
  if (!existsSync(abs))
    throw new ImageError(
      "BUILD_FILE",
      `COPY source "${source}" does not exist in the build context ${context}`,
    );
  return [abs];
}

/**
 * An image by name, making the base images Vessel can build itself (busybox, debian[:suite]) on
 * first use, as docker pulls a missing image. `scratch` is the empty image (undefined).
 */
export async function baseImage(
  store: ImageStore,
  ref: string,
  progress?: Progress,
): Promise<ImageRecord | undefined> {
  if (ref === "scratch") return undefined;
  const found = store.find(ref);
  if (found) return found;
  if (/^(busybox|debian)(:|$)/.test(ref))
    progress?.(`image "${ref}" is not here yet: building it from Debian's packages`);
  // the base images Vessel can make itself, made on first use
  if (/^busybox(:latest)?$/.test(ref)) return buildBusyboxImage(store, "busybox:latest", progress);
  const deb = /^debian(?::(bookworm|bullseye|trixie|12|11|13|stable|latest))?$/.exec(ref);
  if (deb) {
    const suite =
      { "12": "bookworm", "11": "bullseye", "13": "trixie", stable: "bookworm", latest: "bookworm" }[
        deb[1] ?? "latest"
      ] ?? deb[1]!;
    return buildDebianImage(store, ref.includes(":") ? ref : "debian:latest", { suite }, progress);
  }
  return store.resolve(ref);
}

function emptyConfig(): ImageConfig {
  return {
    architecture: hostArchitecture(),
    os: "linux",
    config: { Env: [DEFAULT_PATH] },
    rootfs: { type: "layers", diff_ids: [] },
    history: [],
  };
}

function setEnv(env: string[], key: string, value: string): string[] {
  return [...env.filter((e) => !e.startsWith(`${key}=`)), `${key}=${value}`];
}

/** Copies mode, owner and times of the lowest-to-top merged view of `rel` onto `target`. */
function copyAttrsFromLayers(layerDirs: string[], rel: string, target: string): void {
  for (let i = layerDirs.length - 1; i >= 0; i--) {
    const p = join(layerDirs[i]!, rel);
    try {
      const st = lstatSync(p);
      if (!st.isDirectory()) return;
      chmodSync(target, st.mode & 0o7777);
      chownSync(target, st.uid, st.gid);
      utimesSync(target, st.atime, st.mtime);
      return;
    } catch {
      // not in this layer
    }
  }
}

export async function build(store: ImageStore, opts: BuildOptions): Promise<ImageRecord> {
  const context = resolve(opts.contextDir);
  const file = opts.file ? resolve(opts.file) : join(context, "Dockerfile");
  const fileAlt = join(context, "Vesselfile");
  const path = existsSync(file) ? file : opts.file === undefined && existsSync(fileAlt) ? fileAlt : file;
  if (!existsSync(path))
    throw new ImageError("BUILD_FILE", `no build file: ${path} (give one with -f)`, { path });
  const steps = parseBuildFile(readFileSync(path, "utf8"), opts.buildArgs ?? new Map());
  const progress = opts.progress ?? (() => undefined);
  const cache = opts.noCache ? {} : loadCache(store);
  const newCache = loadCache(store);
  let state: BuildState = { key: "", layers: [], config: emptyConfig() };
  const args = new Map<string, string>();
  let driver = opts.driver;
  const t0 = Date.now();
  for (const [n, step] of steps.entries()) {
    const label = `STEP ${n + 1}/${steps.length}: ${step.text}`;
    progress(label);
    if (step.kind === "FROM") {
      const img = await baseImage(store, step.image, progress);
      state = img
        ? { key: img.id, layers: [...img.manifest.layers], config: structuredClone(img.config) }
        : { key: "scratch", layers: [], config: emptyConfig() };
      state.config.history ??= [];
      continue;
    }
    if (step.kind === "ARG") {
      if (step.value !== undefined) args.set(step.name, step.value);
      state = { ...state, key: sha256Of(`${state.key}\n${step.text}\n${step.value ?? ""}`) };
      continue;
    }
    const inputs =
      step.kind === "COPY" || step.kind === "ADD"
        ? hashSources(context, step.sources)
        : step.kind === "RUN"
          ? [...args].map(([k, v]) => `${k}=${v}`).join("\0")
          : "";
    const key = sha256Of(
      `${state.key}\n${JSON.stringify(step, (k, v) => (k === "line" ? undefined : v))}\n${inputs}`,
    );
    const hit = cache[key];
    if (
      hit &&
      (!hit.layer || store.hasBlob(hit.layer as `sha256:${string}`)) &&
      store.hasBlob(hit.config as `sha256:${string}`)
    ) {
      const config = store.readJson<ImageConfig>(hit.config as `sha256:${string}`);
      const layers = hit.layer
        ? [
            ...state.layers,
            {
              mediaType: "application/vnd.oci.image.layer.v1.tar",
              digest: hit.layer as `sha256:${string}`,
              size: statSync(store.blobPath(hit.layer as `sha256:${string}`)).size,
            },
          ]
        : state.layers;
      state = { key, layers, config };
      progress("--> Using cache");
      continue;
    }
    const config: ImageConfig = structuredClone(state.config);
    const exec: ExecConfig = (config.config ??= {});
    let layer: Descriptor | undefined;
    switch (step.kind) {
      case "ENV":
        for (const [k, v] of step.pairs) exec.Env = setEnv(exec.Env ?? [], k, v);
        break;
      case "LABEL":
        exec.Labels = { ...(exec.Labels ?? {}), ...Object.fromEntries(step.pairs) };
        break;
      case "WORKDIR":
        exec.WorkingDir = posix.resolve(exec.WorkingDir ?? "/", step.value);
        break;
      case "USER":
        exec.User = step.value;
        break;
      case "EXPOSE":
        exec.ExposedPorts = {
          ...(exec.ExposedPorts ?? {}),
          ...Object.fromEntries(step.ports.map((p) => [p.includes("/") ? p : `${p}/tcp`, {}])),
        };
        break;
      case "CMD":
        exec.Cmd = step.shell ? ["/bin/sh", "-c", step.args[0]!] : step.args;
        break;
      case "ENTRYPOINT":
        exec.Entrypoint = step.shell ? ["/bin/sh", "-c", step.args[0]!] : step.args;
        if (step.shell) exec.Cmd = null;
        break;
      case "COPY":
      case "ADD":
        layer = await copyStep(store, state, step, context, exec.WorkingDir ?? "/");
        break;
      case "RUN":
        driver ??= await buildDriver(store.root.replace(/\/image$/, ""));
        layer = await runStep(store, state, step, args, driver, label, progress, opts.output);
        break;
    }
    const created = new Date().toISOString();
    if (layer) {
      config.rootfs = { type: "layers", diff_ids: [...config.rootfs.diff_ids, layer.digest] };
      state.layers = [...state.layers, layer];
    }
    config.created = created;
    config.history = [
      ...(config.history ?? []),
      { created, created_by: step.text, ...(layer ? {} : { empty_layer: true }) },
    ];
    const cfgBlob = store.putJson(config);
    newCache[key] = { ...(layer ? { layer: layer.digest } : {}), config: cfgBlob.digest };
    saveCache(store, newCache);
    state = { key, layers: state.layers, config };
  }
  const img = store.addImage(state.config, state.layers, opts.tag ? [opts.tag] : []);
  progress(`COMMIT ${opts.tag ?? ""} ${img.id.slice(7, 19)} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  return img;
}

async function copyStep(
  store: ImageStore,
  state: BuildState,
  step: Extract<Instruction, { kind: "COPY" | "ADD" }>,
  context: string,
  workdir: string,
): Promise<Descriptor> {
  const staging = store.tempPath("copy");
  mkdirSync(staging, { recursive: true });
  try {
    const layerDirs = await Promise.all(state.layers.map((l) => store.layerDir(l)));
    const destAbs = posix.resolve(workdir, step.dest);
    const sources = step.sources.flatMap((s) => expandSource(context, s));
    const intoDir =
      step.dest.endsWith("/") ||
      sources.length > 1 ||
      (sources.length === 1 && statSync(sources[0]!).isDirectory());
    const destDir = intoDir ? destAbs : posix.dirname(destAbs);
    // parents keep the attributes they have in the image (so COPY x /tmp/ does not make /tmp 0755)
    const parts = destDir.split("/").filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join("/");
      mkdirSync(join(staging, rel), { recursive: true });
      copyAttrsFromLayers(layerDirs, rel, join(staging, rel));
    }
    const copied: string[] = [];
    for (const src of sources) {
      const st = statSync(src);
      if (step.kind === "ADD" && st.isFile() && /\.(tar|tar\.gz|tgz|tar\.xz|tar\.bz2)$/.test(src)) {
        await tar.x({ file: src, cwd: join(staging, destDir) });
        copied.push(join(staging, destDir));
        continue;
      }
      const target = st.isDirectory()
        ? join(staging, destDir)
        : intoDir
          ? join(staging, destDir, posix.basename(src))
          : join(staging, destAbs);
      cpSync(src, target, { recursive: true, dereference: false, preserveTimestamps: true, force: true });
      copied.push(target);
    }
    const owner = step.chown ?? "0:0";
    if (!/^\d+(:\d+)?$/.test(owner))
      throw new ImageError("BUILD_FILE", `--chown=${owner}: only numeric uid[:gid] is supported`);
    for (const c of copied) spawnSync("chown", ["-hR", owner.includes(":") ? owner : `${owner}:${owner}`, c]);
    const out = store.tempPath("layer");
    const { digest, size } = writeTreeTar(staging, out);
    store.adoptFile(out, digest);
    return { mediaType: "application/vnd.oci.image.layer.v1.tar", digest, size };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

async function runStep(
  store: ImageStore,
  state: BuildState,
  step: Extract<Instruction, { kind: "RUN" }>,
  args: Map<string, string>,
  driver: RuntimeDriver,
  label: string,
  progress: Progress,
  output?: (chunk: string) => void,
): Promise<Descriptor> {
  if (state.layers.length === 0)
    throw new ImageError(
      "BUILD_STEP_FAILED",
      `${label}: RUN needs a base image with a shell (FROM scratch has none)`,
    );
  const id = `vessel-build-${process.pid}-${Date.now().toString(36)}`;
  const dir = store.tempPath("run");
  const bundle = join(dir, "bundle");
  const rootfs = join(bundle, "rootfs");
  const upper = join(dir, "upper");
  mkdirSync(bundle, { recursive: true });
  const layerDirs = await Promise.all(state.layers.map((l) => store.layerDir(l)));
  mountRootfs(layerDirs, upper, join(dir, "work"), rootfs);
  let tail = "";
  try {
    const exec = state.config.config ?? {};
    let env = exec.Env ?? [DEFAULT_PATH];
    for (const [k, v] of args) if (!env.some((e) => e.startsWith(`${k}=`))) env = [...env, `${k}=${v}`];
    const argv = step.shell ? ["/bin/sh", "-c", step.args[0]!] : step.args;
    const user = resolveUser(rootfs, exec.User ?? "");
    const mounts: Record<string, unknown>[] = [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    ];
    if (
      existsSync(join(rootfs, "etc", "resolv.conf")) &&
      lstatSync(join(rootfs, "etc", "resolv.conf")).isFile()
    ) {
      mounts.push({
        destination: "/etc/resolv.conf",
        type: "bind",
        source: "/etc/resolv.conf",
        options: ["rbind", "ro"],
      });
    }
    const spec = {
      ociVersion: "1.0.2",
      process: {
        terminal: false,
        user: { uid: user.uid, gid: user.gid },
        args: argv,
        env: [...env, `HOME=${user.home}`],
        cwd: exec.WorkingDir ?? "/",
        capabilities: { bounding: DEFAULT_CAPS, effective: DEFAULT_CAPS, permitted: DEFAULT_CAPS },
        noNewPrivileges: false,
      },
      root: { path: rootfs, readonly: false },
      hostname: "vessel-build",
      mounts,
      linux: {
        // builds share the host's network (as `docker build --network host`), so apt-get works
        namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
        cgroupsPath: `/vessel/${id}`,
      },
    };
    writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
    const started = Date.now();
    const child = driver.run(id, bundle, {
      pidFile: join(dir, "pid"),
      logFile: join(dir, "runtime.log"),
      stdio: "pipe",
    });
    const onData = (b: Buffer) => {
      const text = b.toString();
      tail = (tail + text).slice(-8000);
      output?.(text);
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    const ticker = setInterval(
      () =>
        progress(
          `    ... ${label.slice(0, 60)} still running (${Math.round((Date.now() - started) / 1000)}s)`,
        ),
      15000,
    );
    const code = await child.exit;
    clearInterval(ticker);
    if (code !== 0) {
      let runtimeMsg = "";
      try {
        runtimeMsg = readFileSync(join(dir, "runtime.log"), "utf8")
          .split("\n")
          .filter((l) => l.includes('"error"'))
          .map((l) => (JSON.parse(l) as { msg: string }).msg)
          .join("; ");
      } catch {
        // no runtime log
      }
      throw new ImageError(
        "BUILD_STEP_FAILED",
        `${label} failed with exit code ${code}${runtimeMsg ? ` (${runtimeMsg})` : ""}\n--- output of the step ---\n${tail.trimEnd() || "(no output)"}`,
        { step: step.text, line: step.line, exitCode: code },
      );
    }
    unmount(rootfs);
    const opaque = findOpaqueDirs(upper);
    const out = store.tempPath("layer");
    const { digest, size } = writeTreeTar(upper, out, { overlayWhiteouts: true, opaqueDirs: opaque });
    store.adoptFile(out, digest);
    return { mediaType: "application/vnd.oci.image.layer.v1.tar", digest, size };
  } finally {
    await driver.delete(id);
    unmount(rootfs);
    removeCgroups(`/vessel/${id}`);
    rmSync(dir, { recursive: true, force: true });
  }
}
