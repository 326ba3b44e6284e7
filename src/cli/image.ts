import { UsageError } from "../errors.js";
import { type ArchiveFormat, importRootfs, loadArchive, saveImages } from "../container/image/archive.js";
import { shortId } from "../container/image/digest.js";
import { splitName } from "../container/image/reference.js";
import { ImageStore } from "../container/image/store.js";
import { buildBusyboxImage, buildDebianImage } from "../container/build/base_images.js";
import { build } from "../container/build/builder.js";
import { Manager } from "../container/manager/manager.js";
import { ago, bool, humanSize, list, parseDockerArgs, str, table } from "./docker_args.js";

/**
 * `vessel image <verb>`: ls, rm, inspect, tag, save, load, import, build (a build file, or the
 * base images `--base busybox` / `--base debian`).
 */

const USAGE = `usage: vessel image <command>

  build [-t NAME] [-f FILE] [--build-arg K=V] [--target STAGE] [--no-cache] [-q] DIR
                                build from a build file (Dockerfile syntax, multi-stage, .dockerignore)
  build --base busybox|debian [--suite bookworm] [-t NAME]            make a base image from Debian packages
  ls [-q]                       list images
  rm [-f] IMAGE...              remove names or images
  inspect IMAGE...              show the image config and manifest
  tag IMAGE NAME                add a name
  save -o FILE [--format docker-archive|oci-archive|oci-dir] IMAGE...   (podman load reads the default)
  load -i FILE                  load a docker-archive or OCI archive/layout (podman save writes them)
  import FILE [NAME] [--change 'CMD ["sh"]']   a root filesystem tarball as a one-layer image
`;

export async function run(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (rest[0] === "--help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const store = new ImageStore();
  switch (verb) {
    case "ls":
    case "list":
      return ls(store, rest);
    case "rm":
    case "remove":
      return rm(store, rest);
    case "inspect":
      return inspect(store, rest);
    case "tag": {
      const [src, name] = rest;
      if (!src || !name) throw new UsageError("BAD_ARGS", "usage: vessel image tag IMAGE NAME");
      store.tag(src, name);
      return 0;
    }
    case "save":
      return save(store, rest);
    case "load":
      return load(store, rest);
    case "import":
      return importVerb(store, rest);
    case "build":
      return buildVerb(store, rest);
    case "prune": {
      const m = new Manager();
      const { images, freed } = store.pruneDangling((id) => m.imageInUse(id));
      for (const id of images) process.stdout.write(`Deleted: ${id}\n`);
      process.stdout.write(`Total reclaimed space: ${humanSize(freed)}\n`);
      return 0;
    }
    case undefined:
    case "help":
    case "--help":
      process.stdout.write(USAGE);
      return verb === undefined ? 2 : 0;
    default:
      throw new UsageError("BAD_VERB", `unknown image command "${verb}"\n${USAGE}`);
  }
}

function ls(store: ImageStore, args: string[]): number {
  const p = parseDockerArgs(args, { quiet: { short: "q" }, all: { short: "a" } }, false);
  const images = store.list();
  if (bool(p, "quiet")) {
    for (const i of images) process.stdout.write(`${shortId(i.id)}\n`);
    return 0;
  }
  const rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]];
  for (const i of images) {
    const names = i.names.length ? i.names : ["<none>:<none>"];
    for (const n of names) {
      const { repository, tag } =
        n === "<none>:<none>" ? { repository: "<none>", tag: "<none>" } : splitName(n);
      rows.push([repository, tag, shortId(i.id), ago(i.config.created), humanSize(i.size)]);
    }
  }
  process.stdout.write(table(rows));
  return 0;
}

function rm(store: ImageStore, args: string[]): number {
  const p = parseDockerArgs(args, { force: { short: "f" } }, false);
  if (p.positionals.length === 0) throw new UsageError("NO_IMAGE", "rm needs an image");
  const m = new Manager();
  for (const ref of p.positionals) {
    for (const line of store.remove(ref, { force: bool(p, "force"), inUse: (id) => m.imageInUse(id) })) {
      process.stdout.write(
        `${line.startsWith("deleted") ? `Deleted: ${line.slice(8)}` : `Untagged: ${line}`}\n`,
      );
    }
  }
  return 0;
}

function inspect(store: ImageStore, args: string[]): number {
  if (args.length === 0) throw new UsageError("NO_IMAGE", "inspect needs an image");
  const out = args.map((ref) => {
    const i = store.resolve(ref);
    return {
      Id: i.id,
      RepoTags: i.names,
      ManifestDigest: i.manifestDigest,
      Created: i.config.created,
      Architecture: i.config.architecture,
      Os: i.config.os,
      Size: i.size,
      Config: i.config.config ?? {},
      RootFS: i.config.rootfs,
      History: i.config.history ?? [],
      Layers: i.manifest.layers.map((l) => l.digest),
    };
  });
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}

function save(store: ImageStore, args: string[]): number {
  const p = parseDockerArgs(args, { output: { short: "o", value: true }, format: { value: true } }, false);
  const out = str(p, "output");
  if (!out)
    throw new UsageError("NO_OUTPUT", "save needs -o FILE (writing an archive to a terminal helps no one)");
  if (p.positionals.length === 0) throw new UsageError("NO_IMAGE", "save needs an image");
  const format = (str(p, "format") ?? "docker-archive") as ArchiveFormat;
  if (!["docker-archive", "oci-archive", "oci-dir"].includes(format)) {
    throw new UsageError(
      "BAD_FORMAT",
      `unknown --format "${format}" (docker-archive, oci-archive or oci-dir)`,
    );
  }
  const images = p.positionals.map((ref) => {
    const img = store.resolve(ref);
    const named = img.names.find((n) => n === ref || n.startsWith(`${ref}:`) || n.endsWith(`/${ref}`));
    return named ? { img, name: named } : { img };
  });
  saveImages(store, images, out, format);
  return 0;
}

async function load(store: ImageStore, args: string[]): Promise<number> {
  const p = parseDockerArgs(args, { input: { short: "i", value: true }, quiet: { short: "q" } }, false);
  const input = str(p, "input") ?? p.positionals[0];
  if (!input) throw new UsageError("NO_INPUT", "load needs -i FILE");
  for (const img of await loadArchive(store, input)) {
    process.stdout.write(`Loaded image: ${img.names.join(", ") || img.id}\n`);
  }
  return 0;
}

/** `--change` as docker import takes it: CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE in JSON or shell form. */
function applyChanges(changes: string[]): Record<string, unknown> {
  const exec: Record<string, unknown> = {};
  for (const c of changes) {
    const m = /^(\w+)\s+(.*)$/s.exec(c.trim());
    if (!m) throw new UsageError("BAD_CHANGE", `invalid --change "${c}"`);
    const kind = m[1]!.toUpperCase();
    const rest = m[2]!.trim();
    const argv = () => {
      if (rest.startsWith("[")) return JSON.parse(rest) as string[];
      return ["/bin/sh", "-c", rest];
    };
    if (kind === "CMD") exec.Cmd = argv();
    else if (kind === "ENTRYPOINT") exec.Entrypoint = argv();
    else if (kind === "WORKDIR") exec.WorkingDir = rest;
    else if (kind === "USER") exec.User = rest;
    else if (kind === "ENV")
      exec.Env = [
        ...((exec.Env as string[]) ?? ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        rest.includes("=") ? rest : rest.replace(/\s+/, "="),
      ];
    else if (kind === "EXPOSE")
      exec.ExposedPorts = {
        ...((exec.ExposedPorts as object) ?? {}),
        [rest.includes("/") ? rest : `${rest}/tcp`]: {},
      };
    else
      throw new UsageError(
        "BAD_CHANGE",
        `--change ${kind} is not supported (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE)`,
      );
  }
  return exec;
}

async function importVerb(store: ImageStore, args: string[]): Promise<number> {
  const p = parseDockerArgs(args, { change: { short: "c", value: true, multi: true } }, false);
  const [file, name] = p.positionals;
  if (!file) throw new UsageError("NO_INPUT", "import needs a tarball");
  const exec = applyChanges(list(p, "change"));
  if (!exec.Cmd && !exec.Entrypoint) exec.Cmd = ["/bin/sh"];
  const img = await importRootfs(store, file, name, exec);
  process.stdout.write(`${img.id}\n`);
  return 0;
}

async function buildVerb(store: ImageStore, args: string[]): Promise<number> {
  const p = parseDockerArgs(
    args,
    {
      tag: { short: "t", value: true },
      file: { short: "f", value: true },
      "build-arg": { value: true, multi: true },
      target: { value: true },
      "no-cache": {},
      quiet: { short: "q" },
      base: { value: true },
      suite: { value: true },
      include: { value: true },
    },
    false,
  );
  const quiet = bool(p, "quiet");
  const progress = quiet ? undefined : (line: string) => process.stderr.write(`${line}\n`);
  const base = str(p, "base");
  if (base !== undefined) {
    let img: Awaited<ReturnType<typeof buildBusyboxImage>>;
    if (base === "busybox") img = await buildBusyboxImage(store, str(p, "tag") ?? "busybox:latest", progress);
    else if (base === "debian") {
      const suite = str(p, "suite") ?? "bookworm";
      const include = str(p, "include")?.split(",").filter(Boolean) ?? [];
      img = await buildDebianImage(store, str(p, "tag") ?? `debian:${suite}`, { suite, include }, progress);
    } else throw new UsageError("BAD_BASE", `unknown --base "${base}" (busybox or debian)`);
    process.stdout.write(`${img.id}\n`);
    return 0;
  }
  const dir = p.positionals[0];
  if (!dir) throw new UsageError("NO_CONTEXT", `build needs a context directory (usually ".")\n${USAGE}`);
  const buildArgs = new Map<string, string>();
  for (const a of list(p, "build-arg")) {
    const eq = a.indexOf("=");
    if (eq < 0) {
      const v = process.env[a];
      if (v !== undefined) buildArgs.set(a, v);
    } else buildArgs.set(a.slice(0, eq), a.slice(eq + 1));
  }
  const tag = str(p, "tag");
  const file = str(p, "file");
  const target = str(p, "target");
  const img = await build(store, {
    contextDir: dir,
    buildArgs,
    noCache: bool(p, "no-cache"),
    ...(tag ? { tag } : {}),
    ...(file ? { file } : {}),
    ...(target !== undefined ? { target } : {}),
    ...(progress ? { progress } : {}),
    ...(quiet ? {} : { output: (s: string) => process.stderr.write(s) }),
  });
  process.stdout.write(`${img.id}\n`);
  return 0;
}
