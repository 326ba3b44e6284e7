import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  type Stats,
  symlinkSync,
  utimesSync,
  writeFileSync,
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
import { isMounted, mountRootfs, removeCgroups, unmount } from "../manager/rootfs.js";
import { buildDriver, type RuntimeDriver } from "../manager/runtime_driver.js";
import { buildBusyboxImage, buildDebianImage, type Progress } from "./base_images.js";
import { DockerIgnore } from "./dockerignore.js";
import {
  type BuildFile,
  fail,
  type HealthConfig,
  type Instruction,
  parseStages,
  type Stage,
  stageDeps,
  stageOrder,
} from "./dockerfile.js";

/**
 * `vessel image build`: runs a build file stage by stage, step by step. Only the stages the target
 * needs are built (as BuildKit does), dependencies first. A RUN step runs in a container made by
 * the OCI runtime over the layers so far plus a fresh overlay upper directory; the upper directory
 * is then the step's layer (overlay whiteouts become OCI whiteouts). COPY and ADD stage their
 * files in a directory that becomes the layer; `COPY --from` reads another stage's (or image's)
 * root, mounted read-only for the step.
 *
 * The cache is keyed as docker's is: the parent step's key, the instruction's text after
 * substitution, and for COPY/ADD a hash of the content copied (paths, modes, link targets, bytes;
 * not times), so that a changed file invalidates its COPY step and the steps after it, nothing
 * before. A step that hits the cache says CACHED. Nothing is tagged until every step succeeded.
 */

export interface BuildOptions {
  contextDir: string;
  file?: string;
  tag?: string;
  /** The stage to build (its name); default the last one. */
  target?: string;
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

/** Docker's image config carries Healthcheck beside the OCI fields. */
type ExecWithHealth = ExecConfig & { Healthcheck?: HealthConfig };

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

/**
 * Where COPY reads: the build context (with its .dockerignore) or another stage's root, where
 * absolute symlinks must resolve inside that root, not on the host.
 */
interface SourceTree {
  root: string;
  /** Shown in messages. */
  what: string;
  ignore?: DockerIgnore;
}

/** Hash of what COPY copies: relative paths, modes, link targets and contents (not times). */
function hashSources(tree: SourceTree, sources: string[]): string {
  const h = createHash("sha256");
  for (const abs of sources.flatMap((s) => expandSource(tree, s))) {
    walk(tree, abs, (path, st) => {
      h.update(`${relative(tree.root, path)}\0${st.mode}\0`);
      if (st.isSymbolicLink()) h.update(readlinkSync(path));
      else if (st.isFile()) h.update(readFileSync(path));
    });
  }
  return h.digest("hex");
}

/** Visits `abs` and, for a directory, what is below it, minus what .dockerignore excludes. */
function walk(tree: SourceTree, abs: string, visit: (path: string, st: Stats) => void): void {
  const st = lstatSync(abs);
  visit(abs, st);
  if (!st.isDirectory()) return;
  for (const n of readdirSync(abs).sort()) {
    const child = join(abs, n);
    const rel = relative(tree.root, child);
    if (tree.ignore?.excludes(rel) && !keepsSomething(tree, child)) continue;
    walk(tree, child, visit);
  }
}

/** Whether an excluded path is a directory holding something a `!` exception keeps. */
function keepsSomething(tree: SourceTree, path: string): boolean {
  if (!tree.ignore?.hasExceptions || !lstatSync(path).isDirectory()) return false;
  for (const n of readdirSync(path)) {
    const child = join(path, n);
    if (!tree.ignore.excludes(relative(tree.root, child)) || keepsSomething(tree, child)) return true;
  }
  return false;
}

/** Resolves `p` (absolute, inside root) following symlinks as if `root` were `/` (chroot-like). */
function resolveScoped(root: string, p: string): string {
  let parts = p.split("/").filter(Boolean);
  let done: string[] = [];
  for (let hops = 0; parts.length > 0; ) {
    const part = parts.shift()!;
    if (part === "..") {
      done.pop();
      continue;
    }
    const here = join(root, ...done, part);
    let st: Stats | undefined;
    try {
      st = lstatSync(here);
    } catch {
      st = undefined;
    }
    if (st?.isSymbolicLink()) {
      if (++hops > 40) throw new ImageError("BUILD_FILE", `too many levels of symbolic links in ${p}`);
      const target = readlinkSync(here);
      if (target.startsWith("/")) done = [];
      parts = [...target.split("/").filter(Boolean), ...parts];
      continue;
    }
    done.push(part);
  }
  return join(root, ...done);
}

/** A COPY source: a path inside the tree, with `*` and `?` wildcards in its last part. */
function expandSource(tree: SourceTree, source: string): string[] {
  const root = tree.root;
  // symlinks on the way resolve inside the tree, as if it were `/`: never out to the host's files
  const abs = resolveScoped(root, posix.resolve("/", source));
  if (abs !== root && !abs.startsWith(`${root}/`)) {
    throw new ImageError("BUILD_FILE", `COPY source "${source}" is outside ${tree.what}`);
  }
  const base = posix.basename(abs);
  let hits: string[];
  if (/[*?[]/.test(base)) {
    const dir = dirname(abs);
    const re = new RegExp(
      `^${base
        .replace(/[.+^${}()|\]\\]/g, "\\$&")
        .replace(/\*/g, ".*")
        .replace(/\?/g, ".")}$`,
    );
    hits = existsSync(dir)
      ? readdirSync(dir)
          .filter((n) => re.test(n))
          .sort()
          .map((n) => join(dir, n))
      : [];
  } else hits = existsSync(abs) ? [abs] : [];
  hits = hits.filter(
    (h) => h === root || !tree.ignore?.excludes(relative(root, h)) || keepsSomething(tree, h),
  );
  if (hits.length === 0) {
    const ignored = tree.ignore !== undefined && !tree.ignore.empty && existsSync(abs);
    throw new ImageError(
      "BUILD_FILE",
      `COPY source "${source}" ${ignored ? "is excluded by .dockerignore in" : /[*?[]/.test(base) ? "matches no file in" : "does not exist in"} ${tree.what}`,
    );
  }
  return hits;
}

/** Copies `src` to `dest` as cp -a would (modes, times, symlinks as links), minus ignored files. */
function copyTree(tree: SourceTree, src: string, dest: string): void {
  walk(tree, src, (path, st) => {
    const target = join(dest, relative(src, path));
    if (st.isDirectory()) mkdirSync(target, { recursive: true });
    else {
      mkdirSync(dirname(target), { recursive: true });
      rmSync(target, { force: true, recursive: true });
      if (st.isSymbolicLink()) symlinkSync(readlinkSync(path), target);
      else if (st.isFile()) copyFileSync(path, target);
      else return; // devices, sockets and FIFOs are not copied (docker's COPY refuses them too)
    }
    if (!st.isSymbolicLink()) {
      chmodSync(target, Number(st.mode) & 0o7777);
      utimesSync(target, st.atime, st.mtime);
    }
  });
  // directories got their children after their times were set: set them again, deepest first
  const dirs: [string, Stats][] = [];
  walk(tree, src, (path, st) => {
    if (st.isDirectory()) dirs.push([join(dest, relative(src, path)), st]);
  });
  for (const [d, st] of dirs.reverse()) utimesSync(d, st.atime, st.mtime);
}

const BUSYBOX_RE = /^busybox(:latest)?$/;
const DEBIAN_RE = /^debian(?::(bookworm|bullseye|trixie|12|11|13|stable|latest))?$/;

/** Whether `ref` names an image that is here, `scratch`, or one of the base images Vessel makes. */
export function canProvideImage(store: ImageStore, ref: string): boolean {
  return ref === "scratch" || BUSYBOX_RE.test(ref) || DEBIAN_RE.test(ref) || store.find(ref) !== undefined;
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
  if (BUSYBOX_RE.test(ref) || DEBIAN_RE.test(ref))
    progress?.(`image "${ref}" is not here yet: building it from Debian's packages`);
  // the base images Vessel can make itself, made on first use
  if (BUSYBOX_RE.test(ref)) return buildBusyboxImage(store, "busybox:latest", progress);
  const deb = DEBIAN_RE.exec(ref);
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

/** Mounts `layers` at a fresh directory (an overlay with a throw-away upper), runs `fn` on it. */
async function withMountedRoot<T>(
  store: ImageStore,
  layers: Descriptor[],
  what: string,
  line: number,
  fn: (root: string) => T | Promise<T>,
): Promise<T> {
  if (layers.length === 0)
    throw fail(line, `COPY --from: ${what} has no files (it is built FROM scratch with no COPY)`);
  const dir = store.tempPath("from");
  const root = join(dir, "root");
  try {
    mountRootfs(
      await Promise.all(layers.map((l) => store.layerDir(l))),
      join(dir, "upper"),
      join(dir, "work"),
      root,
    );
    return await fn(root);
  } finally {
    unmount(root);
    // never rm -r through a mount that would not go
    if (!isMounted(root)) rmSync(dir, { recursive: true, force: true });
  }
}

/** What COPY --from reads: a built stage's layers or an image's. */
type FromSource = { layers: Descriptor[]; what: string };

export async function build(store: ImageStore, opts: BuildOptions): Promise<ImageRecord> {
  const context = resolve(opts.contextDir);
  const file = opts.file ? resolve(opts.file) : join(context, "Dockerfile");
  const fileAlt = join(context, "Vesselfile");
  const path = existsSync(file) ? file : opts.file === undefined && existsSync(fileAlt) ? fileAlt : file;
  if (!existsSync(path))
    throw new ImageError("BUILD_FILE", `no build file: ${path} (give one with -f)`, { path });
  const parsed = parseStages(readFileSync(path, "utf8"), opts.buildArgs ?? new Map());
  const order = stageOrder(parsed, opts.target);
  // every image the needed stages name must be here or makeable before any step runs
  for (const i of order)
    for (const dep of stageDeps(parsed, i))
      if ("image" in dep && !canProvideImage(store, dep.image))
        throw fail(
          dep.line,
          `no stage or image named "${dep.image}" (${stageNames(parsed)}; images: see \`vessel image ls\`)`,
        );
  const progress = opts.progress ?? (() => undefined);
  const cache = opts.noCache ? {} : loadCache(store);
  const newCache = loadCache(store);
  const ctx: BuildContext = {
    store,
    parsed,
    context: {
      root: context,
      what: `the build context ${context}`,
      ignore: DockerIgnore.forContext(context),
    },
    cache,
    newCache,
    progress,
    ...(opts.output ? { output: opts.output } : {}),
    ...(opts.driver ? { driver: opts.driver } : {}),
    built: new Map(),
  };
  const t0 = Date.now();
  for (const [n, i] of order.entries()) {
    const prefix = order.length > 1 ? `[${n + 1}/${order.length}] ` : "";
    ctx.built.set(i, await buildStage(ctx, parsed.stages[i]!, prefix));
  }
  const state = ctx.built.get(order.at(-1)!)!;
  const img = store.addImage(state.config, state.layers, opts.tag ? [opts.tag] : []);
  progress(`COMMIT ${opts.tag ?? ""} ${img.id.slice(7, 19)} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  return img;
}

function stageNames(f: BuildFile): string {
  const names = f.stages.flatMap((s) => (s.name ? [s.name] : []));
  return names.length ? `stages: ${names.join(", ")}` : "the file names no stage";
}

interface BuildContext {
  store: ImageStore;
  parsed: BuildFile;
  context: SourceTree;
  cache: Record<string, CacheEntry>;
  newCache: Record<string, CacheEntry>;
  progress: Progress;
  output?: (chunk: string) => void;
  driver?: RuntimeDriver;
  built: Map<number, BuildState>;
}

async function fromSource(ctx: BuildContext, ref: string, line: number): Promise<FromSource> {
  const dep = ctx.parsed.stages.find((s) => s.name === ref.toLowerCase());
  const index = /^\d+$/.test(ref) ? Number(ref) : dep?.index;
  if (index !== undefined) {
    const st = ctx.built.get(index);
    if (!st) throw fail(line, `COPY --from=${ref}: that stage was not built first (a bug: please report it)`);
    return { layers: st.layers, what: `stage "${ctx.parsed.stages[index]!.name ?? index}"` };
  }
  const img = await baseImage(ctx.store, ref, ctx.progress);
  return { layers: img ? [...img.manifest.layers] : [], what: `image "${ref}"` };
}

async function buildStage(ctx: BuildContext, stage: Stage, prefix: string): Promise<BuildState> {
  const { store, progress } = ctx;
  const total = stage.steps.length + 1;
  progress(`${prefix}STEP 1/${total}: ${stage.from.text}`);
  const baseStage = ctx.parsed.stages.find(
    (s) => s.name !== undefined && s.name === stage.from.image.toLowerCase(),
  );
  let state: BuildState;
  if (baseStage) {
    const b = ctx.built.get(baseStage.index)!;
    state = { key: b.key, layers: [...b.layers], config: structuredClone(b.config) };
  } else {
    const img = await baseImage(store, stage.from.image, progress);
    state = img
      ? { key: img.id, layers: [...img.manifest.layers], config: structuredClone(img.config) }
      : { key: "scratch", layers: [], config: emptyConfig() };
  }
  state.config.history ??= [];
  const args = new Map<string, string>();
  for (const [n, step] of stage.steps.entries()) {
    const label = `${prefix}STEP ${n + 2}/${total}: ${step.text}`;
    progress(label);
    if (step.kind === "ARG") {
      if (step.value !== undefined) args.set(step.name, step.value);
      // as in docker, a changed value invalidates the RUN steps that see it (their inputs), not
      // the COPY steps between
      state = { ...state, key: sha256Of(`${state.key}\n${step.text}`) };
      continue;
    }
    let from: FromSource | undefined;
    let inputs = "";
    if (step.kind === "COPY" || step.kind === "ADD") {
      if (step.from !== undefined) {
        from = await fromSource(ctx, step.from, step.line);
        inputs = await withMountedRoot(store, from.layers, from.what, step.line, (root) =>
          hashSources({ root, what: from!.what }, step.sources),
        );
      } else inputs = hashSources(ctx.context, step.sources);
    } else if (step.kind === "RUN") inputs = [...args].map(([k, v]) => `${k}=${v}`).join("\0");
    const key = sha256Of(
      `${state.key}\n${JSON.stringify(step, (k, v) => (k === "line" ? undefined : v))}\n${inputs}`,
    );
    const hit = ctx.cache[key];
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
      progress("--> CACHED");
      continue;
    }
    const config: ImageConfig = structuredClone(state.config);
    const exec: ExecWithHealth = (config.config ??= {});
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
      case "STOPSIGNAL":
        exec.StopSignal =
          /^\d+$/.test(step.value) || step.value.startsWith("SIG") ? step.value : `SIG${step.value}`;
        break;
      case "HEALTHCHECK":
        exec.Healthcheck = step.health;
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
        if (from) {
          const src = from;
          layer = await withMountedRoot(store, src.layers, src.what, step.line, (root) =>
            copyStep(store, state, step, { root, what: src.what }, exec.WorkingDir ?? "/"),
          );
        } else layer = await copyStep(store, state, step, ctx.context, exec.WorkingDir ?? "/");
        break;
      case "RUN":
        ctx.driver ??= await buildDriver(store.root.replace(/\/image$/, ""));
        layer = await runStep(store, state, step, args, ctx.driver, label, progress, ctx.output);
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
    ctx.newCache[key] = { ...(layer ? { layer: layer.digest } : {}), config: cfgBlob.digest };
    saveCache(store, ctx.newCache);
    state = { key, layers: state.layers, config };
  }
  return state;
}

async function copyStep(
  store: ImageStore,
  state: BuildState,
  step: Extract<Instruction, { kind: "COPY" | "ADD" }>,
  tree: SourceTree,
  workdir: string,
): Promise<Descriptor> {
  const staging = store.tempPath("copy");
  mkdirSync(staging, { recursive: true });
  try {
    const layerDirs = await Promise.all(state.layers.map((l) => store.layerDir(l)));
    const destAbs = posix.resolve(workdir, step.dest);
    const sources = step.sources.flatMap((s) => expandSource(tree, s));
    const intoDir =
      step.dest.endsWith("/") ||
      sources.length > 1 ||
      (sources.length === 1 && lstatSync(sources[0]!).isDirectory());
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
      const st = lstatSync(src);
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
      if (st.isDirectory()) {
        // the directory's contents, not the directory itself (Dockerfile reference, COPY)
        for (const n of readdirSync(src)) {
          const child = join(src, n);
          if (tree.ignore?.excludes(relative(tree.root, child)) && !keepsSomething(tree, child)) continue;
          copyTree(tree, child, join(target, n));
          copied.push(join(target, n));
        }
      } else {
        copyTree(tree, src, target);
        copied.push(target);
      }
    }
    const owner = step.chown ?? "0:0";
    if (!/^\d+(:\d+)?$/.test(owner))
      throw new ImageError("BUILD_FILE", `--chown=${owner}: only numeric uid[:gid] is supported`);
    for (const c of copied) {
      spawnSync("chown", ["-hR", owner.includes(":") ? owner : `${owner}:${owner}`, c]);
      if (step.chmod) spawnSync("chmod", ["-R", step.chmod, c]);
    }
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
