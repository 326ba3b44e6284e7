import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as tar from "tar";
import { type Digest, digestHex, isDigest } from "./digest.js";
import { ImageError } from "./errors.js";
import {
  ANNOTATION_REF_NAME,
  ANNOTATION_VESSEL_NAME,
  type Descriptor,
  type ExecConfig,
  hostArchitecture,
  type ImageConfig,
  type Index,
  MEDIA_OCI_INDEX,
  MEDIA_OCI_MANIFEST,
  type Manifest,
} from "./oci_types.js";
import { normalizeName } from "./reference.js";
import type { ImageRecord, ImageStore } from "./store.js";
import { TarFileWriter } from "./tar_writer.js";

/**
 * Moving images in and out of the store:
 * - a root filesystem tarball (`docker import`): one layer, a fresh config;
 * - docker-archive (`docker save` / `podman save`): `manifest.json` listing, per image, the config
 *   file, its RepoTags and the layer tars; plus the legacy `repositories` file;
 * - OCI image layout, as a directory or a tar of one (`podman save --format oci-archive`).
 */

export const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export type ArchiveFormat = "docker-archive" | "oci-archive" | "oci-dir";

export function newConfig(
  diffIds: Digest[],
  exec: ExecConfig,
  history: string,
  created = new Date().toISOString(),
): ImageConfig {
  return {
    created,
    architecture: hostArchitecture(),
    os: "linux",
    config: { Env: [DEFAULT_PATH], ...exec },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: [{ created, created_by: history }],
  };
}

/** Imports a root filesystem tarball (plain or gzip) as a one-layer image. */
export async function importRootfs(
  store: ImageStore,
  tarPath: string,
  name: string | undefined,
  exec: ExecConfig = {},
  /** A fixed creation time makes the same tarball give the same image id (base images). */
  created?: string,
): Promise<ImageRecord> {
  if (!existsSync(tarPath)) throw new ImageError("BAD_ARCHIVE", `no such file: "${tarPath}"`, { tarPath });
  const layer = await store.putLayerFile(tarPath);
  const config = newConfig([layer.digest], exec, `vessel image import ${tarPath}`, created);
  return store.addImage(config, [layer], name === undefined ? [] : [name]);
}

async function extractArchive(store: ImageStore, archive: string): Promise<string> {
  const dir = store.tempPath("load");
  mkdirSync(dir, { recursive: true });
  try {
    await tar.x({ file: archive, cwd: dir, preserveOwner: false });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new ImageError(
      "BAD_ARCHIVE",
      `"${archive}" is not a readable tar archive: ${(err as Error).message}`,
      {
        archive,
      },
    );
  }
  return dir;
}

/** Loads every image of a docker-archive, OCI archive or OCI layout directory. */
export async function loadArchive(
  store: ImageStore,
  source: string,
  extraName?: string,
): Promise<ImageRecord[]> {
  if (!existsSync(source))
    throw new ImageError("BAD_ARCHIVE", `no such file or directory: "${source}"`, { source });
  const isDir = statSync(source).isDirectory();
  const dir = isDir ? source : await extractArchive(store, source);
  try {
    if (existsSync(join(dir, "manifest.json"))) return await loadDockerDir(store, dir, extraName);
    if (existsSync(join(dir, "oci-layout")) && existsSync(join(dir, "index.json"))) {
      return await loadOciDir(store, dir, extraName);
    }
    throw new ImageError(
      "BAD_ARCHIVE",
      `"${source}" is neither a docker-archive (no manifest.json) nor an OCI layout (no oci-layout and index.json)`,
      { source },
    );
  } finally {
    if (!isDir) rmSync(dir, { recursive: true, force: true });
  }
}

function inside(dir: string, rel: string): string {
  const p = join(dir, rel);
  if (!p.startsWith(`${dir}/`))
    throw new ImageError("BAD_ARCHIVE", `archive member "${rel}" escapes the archive`);
  return p;
}

async function loadDockerDir(store: ImageStore, dir: string, extraName?: string): Promise<ImageRecord[]> {
  type Entry = { Config: string; RepoTags?: string[] | null; Layers: string[] };
  let entries: Entry[];
  try {
    entries = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Entry[];
    if (!Array.isArray(entries)) throw new Error("manifest.json is not a list");
  } catch (err) {
    throw new ImageError("BAD_ARCHIVE", `bad docker-archive manifest.json: ${(err as Error).message}`);
  }
  const out: ImageRecord[] = [];
  for (const e of entries) {
    const config = JSON.parse(readFileSync(inside(dir, e.Config), "utf8")) as ImageConfig;
    const layers: Descriptor[] = [];
    for (const l of e.Layers) layers.push(await store.putLayerFile(inside(dir, l)));
    const fixed = fixDiffIds(config, layers);
    const names = [...(e.RepoTags ?? []), ...(extraName ? [extraName] : [])];
    out.push(store.addImage(fixed, layers, names));
  }
  return out;
}

/** Our layers are stored uncompressed, so their digests are the diff_ids; make the config agree. */
function fixDiffIds(config: ImageConfig, layers: Descriptor[]): ImageConfig {
  const ids = layers.map((l) => l.digest);
  const cur = config.rootfs?.diff_ids ?? [];
  if (cur.length === ids.length && cur.every((d, i) => d === ids[i])) return config;
  return { ...config, rootfs: { type: "layers", diff_ids: ids } };
}

async function loadOciDir(store: ImageStore, dir: string, extraName?: string): Promise<ImageRecord[]> {
  const blob = (d: Digest): string => {
    if (!isDigest(d)) throw new ImageError("BAD_ARCHIVE", `bad digest "${d}" in OCI layout`);
    return join(dir, "blobs", "sha256", digestHex(d));
  };
  const readJson = <T>(d: Digest): T => JSON.parse(readFileSync(blob(d), "utf8")) as T;
  const out: ImageRecord[] = [];
  const visit = async (desc: Descriptor, inheritedName: string | undefined): Promise<void> => {
    const name = nameFromAnnotations(desc.annotations) ?? inheritedName;
    if (desc.mediaType === MEDIA_OCI_INDEX || desc.mediaType?.endsWith("manifest.list.v2+json")) {
      const idx = readJson<Index>(desc.digest);
      const pick =
        idx.manifests.find(
          (m) => m.platform?.architecture === hostArchitecture() && m.platform.os === "linux",
        ) ?? idx.manifests[0];
      if (pick) await visit(pick, name);
      return;
    }
    const man = readJson<Manifest>(desc.digest);
    const config = readJson<ImageConfig>(man.config.digest);
    const layers: Descriptor[] = [];
    for (const l of man.layers) layers.push(await store.putLayerFile(blob(l.digest)));
    const names = [...(name ? [name] : []), ...(extraName ? [extraName] : [])];
    out.push(store.addImage(fixDiffIds(config, layers), layers, names));
  };
  const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as Index;
  for (const m of index.manifests) await visit(m, undefined);
  return out;
}

function nameFromAnnotations(a: Record<string, string> | undefined): string | undefined {
  const vessel = a?.[ANNOTATION_VESSEL_NAME];
  if (vessel) return vessel;
  const ref = a?.[ANNOTATION_REF_NAME];
  // a full reference ("localhost/app:1") names the image; a bare tag ("1") does not say which repository
  if (ref && (ref.includes("/") || ref.includes(":"))) return ref;
  return undefined;
}

/** Writes images to `outPath` as a docker-archive (default), an OCI archive or an OCI layout directory. */
export function saveImages(
  store: ImageStore,
  images: { img: ImageRecord; name?: string }[],
  outPath: string,
  format: ArchiveFormat,
): void {
  if (format === "oci-dir") {
    writeOciDir(store, images, outPath);
    return;
  }
  const w = new TarFileWriter(outPath);
  const now = new Date();
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: now };
  try {
    if (format === "docker-archive") {
      const manifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
      const repositories: Record<string, Record<string, string>> = {};
      const written = new Set<string>();
      for (const { img, name } of images) {
        const cfgName = `${digestHex(img.id)}.json`;
        if (!written.has(cfgName)) {
          w.file({ ...meta, path: cfgName }, store.blobPath(img.id));
          written.add(cfgName);
        }
        const layers: string[] = [];
        for (const l of img.manifest.layers) {
          const ln = `${digestHex(l.digest)}.tar`;
          if (!written.has(ln)) {
            w.file({ ...meta, path: ln }, store.blobPath(l.digest));
            written.add(ln);
          }
          layers.push(ln);
        }
        const tags = name ? [normalizeName(name)] : img.names;
        manifest.push({ Config: cfgName, RepoTags: tags, Layers: layers });
        const top = img.manifest.layers.at(-1);
        for (const t of tags) {
          const colon = t.lastIndexOf(":");
          const repo = t.slice(0, colon);
          repositories[repo] = {
            ...(repositories[repo] ?? {}),
            [t.slice(colon + 1)]: top ? digestHex(top.digest) : "",
          };
        }
      }
      w.bytes({ ...meta, path: "manifest.json" }, Buffer.from(JSON.stringify(manifest)));
      w.bytes({ ...meta, path: "repositories" }, Buffer.from(JSON.stringify(repositories)));
    } else {
      const blobs = new Set<string>();
      const index: Index = { schemaVersion: 2, mediaType: MEDIA_OCI_INDEX, manifests: [] };
      w.bytes({ ...meta, path: "oci-layout" }, Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })));
      w.header({ ...meta, mode: 0o755, path: "blobs/", type: "Directory", size: 0 });
      w.header({ ...meta, mode: 0o755, path: "blobs/sha256/", type: "Directory", size: 0 });
      for (const { img, name } of images) {
        for (const d of [img.manifestDigest, img.id, ...img.manifest.layers.map((l) => l.digest)]) {
          if (blobs.has(d)) continue;
          blobs.add(d);
          w.file({ ...meta, path: `blobs/sha256/${digestHex(d)}` }, store.blobPath(d));
        }
        index.manifests.push(...indexEntries(img, name));
      }
      w.bytes({ ...meta, path: "index.json" }, Buffer.from(JSON.stringify(index)));
    }
    w.finish();
  } catch (err) {
    w.abort();
    rmSync(outPath, { force: true });
    throw err;
  }
}

function indexEntries(img: ImageRecord, name: string | undefined): Descriptor[] {
  const names = name ? [normalizeName(name)] : img.names;
  const base = { mediaType: MEDIA_OCI_MANIFEST, digest: img.manifestDigest, size: img.manifestSize };
  if (names.length === 0) return [base];
  return names.map((n) => ({
    ...base,
    annotations: { [ANNOTATION_REF_NAME]: n, [ANNOTATION_VESSEL_NAME]: n },
  }));
}

function writeOciDir(store: ImageStore, images: { img: ImageRecord; name?: string }[], outDir: string): void {
  mkdirSync(join(outDir, "blobs", "sha256"), { recursive: true });
  const index: Index = { schemaVersion: 2, mediaType: MEDIA_OCI_INDEX, manifests: [] };
  for (const { img, name } of images) {
    for (const d of [img.manifestDigest, img.id, ...img.manifest.layers.map((l) => l.digest)]) {
      const dst = join(outDir, "blobs", "sha256", digestHex(d));
      if (!existsSync(dst)) copyFileSync(store.blobPath(d), dst);
    }
    index.manifests.push(...indexEntries(img, name));
  }
  writeFileSync(join(outDir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(join(outDir, "index.json"), JSON.stringify(index));
}
