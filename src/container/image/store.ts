import { createHash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import { createGunzip } from "node:zlib";
import { withLockFile } from "../lock_file.js";
import { type Digest, digestHex, isDigest, sha256Of, shortId } from "./digest.js";
import { ImageError } from "./errors.js";
import { unpackLayer } from "./layer.js";
import {
  ANNOTATION_REF_NAME,
  ANNOTATION_VESSEL_NAME,
  type Descriptor,
  type ImageConfig,
  type Index,
  MEDIA_OCI_CONFIG,
  MEDIA_OCI_INDEX,
  MEDIA_OCI_LAYER,
  MEDIA_OCI_MANIFEST,
  type Manifest,
} from "./oci_types.js";
import { normalizeName } from "./reference.js";

/**
 * The image store: one OCI image layout (image-spec image-layout.md) under `<root>/image/oci`
 * holding every blob by sha256, an `index.json` naming each image's manifest (the name in the
 * `org.opencontainers.image.ref.name` annotation, as `skopeo copy oci:` writes it), and beside it
 * the unpacked layers `<root>/image/layers/<hex>/`, each unpacked once and shared read-only by
 * every container through overlayfs.
 *
 * Layers are stored uncompressed (media type ...layer.v1.tar), so a layer's digest is also its
 * diff_id; gzip layers are decompressed on the way in.
 */

export interface ImageRecord {
  /** The image id: the digest of its config blob (what `docker images` shows). */
  id: Digest;
  manifestDigest: Digest;
  manifestSize: number;
  names: string[];
  manifest: Manifest;
  config: ImageConfig;
  /** Sum of layer sizes. */
  size: number;
}

export function defaultRoot(): string {
  return process.env.VESSEL_ROOT ?? "/var/lib/vessel";
}

export class ImageStore {
  readonly root: string;
  readonly layout: string;
  readonly layers: string;
  readonly tmp: string;

  constructor(root: string = defaultRoot()) {
    this.root = join(root, "image");
    this.layout = join(this.root, "oci");
    this.layers = join(this.root, "layers");
    this.tmp = join(this.root, "tmp");
    for (const d of [join(this.layout, "blobs", "sha256"), this.layers, this.tmp])
      mkdirSync(d, { recursive: true });
    const marker = join(this.layout, "oci-layout");
    if (!existsSync(marker)) writeFileSync(marker, `${JSON.stringify({ imageLayoutVersion: "1.0.0" })}\n`);
    if (!existsSync(this.indexPath))
      this.writeIndex({ schemaVersion: 2, mediaType: MEDIA_OCI_INDEX, manifests: [] });
  }

  private get indexPath(): string {
    return join(this.layout, "index.json");
  }

  blobPath(d: Digest): string {
    return join(this.layout, "blobs", "sha256", digestHex(d));
  }

  hasBlob(d: Digest): boolean {
    return existsSync(this.blobPath(d));
  }

  /** A fresh path under the store's tmp directory (same filesystem as the blobs, for rename). */
  tempPath(tag: string): string {
    return join(
      this.tmp,
      `${tag}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
    );
  }

  putBytes(data: Buffer | string): { digest: Digest; size: number } {
    const buf = typeof data === "string" ? Buffer.from(data) : data;
    const digest = sha256Of(buf);
    if (!this.hasBlob(digest)) {
      const t = this.tempPath("blob");
      writeFileSync(t, buf);
      renameSync(t, this.blobPath(digest));
    }
    return { digest, size: buf.length };
  }

  putJson(value: unknown): { digest: Digest; size: number } {
    return this.putBytes(JSON.stringify(value));
  }

  /** Moves a file whose digest is already known into the store. */
  adoptFile(path: string, digest: Digest): void {
    if (this.hasBlob(digest)) rmSync(path, { force: true });
    else renameSync(path, this.blobPath(digest));
  }

  /**
   * Copies a layer tar (plain or gzip, sniffed) into the store uncompressed, hashing it on the
   * way. Returns the layer descriptor (digest = diff_id).
   */
  async putLayerFile(src: string): Promise<Descriptor> {
    const head = Buffer.alloc(2);
    const fd = openSync(src, "r");
    try {
      (await import("node:fs")).readSync(fd, head, 0, 2, 0);
    } finally {
      closeSync(fd);
    }
    const gz = head[0] === 0x1f && head[1] === 0x8b;
    const hash = createHash("sha256");
    let size = 0;
    const t = this.tempPath("layer");
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    const stages: NodeJS.ReadWriteStream[] = gz ? [createGunzip(), tap] : [tap];
    await pipeline(createReadStream(src), ...(stages as [Transform]), createWriteStream(t));
    const digest: Digest = `sha256:${hash.digest("hex")}`;
    this.adoptFile(t, digest);
    return { mediaType: MEDIA_OCI_LAYER, digest, size };
  }

  readBlob(d: Digest): Buffer {
    try {
      return readFileSync(this.blobPath(d));
    } catch (err) {
      throw new ImageError(
        "BAD_BLOB",
        `blob ${d} is missing from the store ${this.layout}`,
        { digest: d },
        err,
      );
    }
  }

  readJson<T>(d: Digest): T {
    return JSON.parse(this.readBlob(d).toString("utf8")) as T;
  }

  readIndex(): Index {
    return JSON.parse(readFileSync(this.indexPath, "utf8")) as Index;
  }

  private writeIndex(index: Index): void {
    const t = this.tempPath("index");
    writeFileSync(t, `${JSON.stringify(index, null, 2)}\n`);
    renameSync(t, this.indexPath);
  }

  /** Runs `fn` holding the store lock (an O_EXCL lock file; stale after 30 s). */
  private locked<T>(fn: () => T): T {
    const lock = join(this.root, "lock");
    return withLockFile(
      lock,
      { staleMs: 30_000, timeoutMs: 60_000, pollMs: 10 },
      () =>
        new ImageError(
          "BAD_BLOB",
          `image store is locked (${lock} kept for 60 s): another vessel command is using it; try again when that one ends`,
        ),
      fn,
    );
  }

  /**
   * Writes the config and manifest of an image whose layers are already blobs, and names it.
   * A name moves from any image that had it (as `docker tag` does).
   */
  addImage(config: ImageConfig, layers: Descriptor[], names: string[]): ImageRecord {
    for (const l of layers) {
      if (!this.hasBlob(l.digest)) throw new ImageError("BAD_BLOB", `layer ${l.digest} is not in the store`);
    }
    const cfg = this.putJson(config);
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MEDIA_OCI_MANIFEST,
      config: { mediaType: MEDIA_OCI_CONFIG, digest: cfg.digest, size: cfg.size },
      layers,
    };
    const man = this.putJson(manifest);
    const normalized = names.map(normalizeName);
    this.locked(() => {
      const index = this.readIndex();
      const kept = index.manifests.filter((m) => {
        const n = m.annotations?.[ANNOTATION_VESSEL_NAME];
        if (n !== undefined && normalized.includes(n)) return false;
        // an unnamed entry of the same manifest is replaced by the named one
        return !(m.digest === man.digest && (n === undefined || normalized.length === 0));
      });
      const entries: Descriptor[] =
        normalized.length === 0
          ? [{ mediaType: MEDIA_OCI_MANIFEST, digest: man.digest, size: man.size }]
          : normalized.map((n) => ({
              mediaType: MEDIA_OCI_MANIFEST,
              digest: man.digest,
              size: man.size,
              annotations: {
                [ANNOTATION_VESSEL_NAME]: n,
                [ANNOTATION_REF_NAME]: n.slice(n.lastIndexOf(":") + 1),
              },
            }));
      // an image whose names all moved away keeps an unnamed entry (a "<none>" image, as docker)
      const orphaned = index.manifests.filter(
        (m) =>
          m.digest !== man.digest &&
          !kept.some((k) => k.digest === m.digest) &&
          !entries.some((e) => e.digest === m.digest),
      );
      const orphans = [...new Set(orphaned.map((m) => m.digest))].map((digest) => {
        const m = orphaned.find((o) => o.digest === digest)!;
        return { mediaType: m.mediaType, digest: m.digest, size: m.size };
      });
      index.manifests = [...kept, ...orphans, ...entries];
      this.writeIndex(index);
    });
    return this.recordFor(man.digest);
  }

  private recordFor(manifestDigest: Digest): ImageRecord {
    const manifest = this.readJson<Manifest>(manifestDigest);
    const config = this.readJson<ImageConfig>(manifest.config.digest);
    const names = this.readIndex()
      .manifests.filter((m) => m.digest === manifestDigest)
      .map((m) => m.annotations?.[ANNOTATION_VESSEL_NAME])
      .filter((n): n is string => n !== undefined);
    return {
      id: manifest.config.digest,
      manifestDigest,
      manifestSize: statSync(this.blobPath(manifestDigest)).size,
      names,
      manifest,
      config,
      size: manifest.layers.reduce((a, l) => a + l.size, 0),
    };
  }

  list(): ImageRecord[] {
    const seen = new Set<string>();
    const out: ImageRecord[] = [];
    for (const m of this.readIndex().manifests) {
      if (seen.has(m.digest)) continue;
      seen.add(m.digest);
      out.push(this.recordFor(m.digest));
    }
    return out;
  }

  /** Finds an image by name[:tag], by id (full, `sha256:`-prefixed or a unique prefix of 4+ hex digits). */
  resolve(ref: string): ImageRecord {
    const found = this.find(ref);
    if (found === undefined) {
      throw new ImageError(
        "IMAGE_NOT_FOUND",
        `no such image: "${ref}" (see \`vessel image ls\`; make one with \`vessel image build\`, \`import\` or \`load\`)`,
        { ref },
      );
    }
    return found;
  }

  find(ref: string): ImageRecord | undefined {
    const index = this.readIndex();
    const candidates = [normalizeName(ref), normalizeName(`localhost/${ref}`)];
    for (const c of candidates) {
      const byName = index.manifests.find((m) => m.annotations?.[ANNOTATION_VESSEL_NAME] === c);
      if (byName) return this.recordFor(byName.digest);
    }
    // podman's names carry localhost/ or docker.io/library/: accept the short name
    const shortMatch = index.manifests.filter((m) => {
      const n = m.annotations?.[ANNOTATION_VESSEL_NAME];
      return n !== undefined && (n.endsWith(`/${normalizeName(ref)}`) || n === normalizeName(ref));
    });
    if (shortMatch.length === 1) return this.recordFor(shortMatch[0]!.digest);
    const hex = ref.replace(/^sha256:/, "");
    if (/^[0-9a-f]{4,64}$/.test(hex)) {
      const all = this.list();
      const hits = all.filter(
        (r) => digestHex(r.id).startsWith(hex) || digestHex(r.manifestDigest).startsWith(hex),
      );
      if (hits.length === 1) return hits[0];
      if (hits.length > 1) {
        throw new ImageError(
          "IMAGE_AMBIGUOUS",
          `image id prefix "${ref}" matches ${hits.length} images; give more digits`,
          {
            ref,
          },
        );
      }
    }
    return undefined;
  }

  /** Adds a name to an image. */
  tag(ref: string, name: string): ImageRecord {
    const img = this.resolve(ref);
    return this.addImage(img.config, img.manifest.layers, [name]);
  }

  /**
   * Removes a name, or (given an id) the whole image; then drops blobs and unpacked layers that no
   * image references any more. `inUse(id)` says whether a container still uses an image.
   */
  remove(ref: string, opts: { force?: boolean; inUse?: (id: Digest) => boolean } = {}): string[] {
    const img = this.resolve(ref);
    let wanted: string | undefined;
    try {
      wanted = normalizeName(ref);
    } catch {
      wanted = undefined; // an id, not a name
    }
    const exact = img.names.filter((n) => n === wanted);
    const matched =
      exact.length > 0
        ? exact
        : img.names.filter((n) => wanted !== undefined && n.endsWith(`/${wanted}`)).slice(0, 1);
    // removing by id, or the image's last name, removes the image
    const removeAll = matched.length === 0 || img.names.length <= matched.length;
    if (removeAll && !opts.force && opts.inUse?.(img.id)) {
      throw new ImageError(
        "IMAGE_IN_USE",
        `image "${ref}" (${shortId(img.id)}) is used by a container; remove the container first or use --force`,
        { ref },
      );
    }
    const removed: string[] = [];
    this.locked(() => {
      const index = this.readIndex();
      index.manifests = index.manifests.filter((m) => {
        if (m.digest !== img.manifestDigest) return true;
        const n = m.annotations?.[ANNOTATION_VESSEL_NAME];
        if (removeAll || (n !== undefined && matched.includes(n))) {
          removed.push(n ?? shortId(img.id));
          return false;
        }
        return true;
      });
      this.writeIndex(index);
    });
    if (removeAll) {
      removed.push(`deleted ${img.id}`);
      this.gc();
    }
    return removed;
  }

  /** Removes unnamed ("dangling") images that no container uses, then collects garbage. */
  pruneDangling(inUse: (id: Digest) => boolean = () => false): { images: string[]; freed: number } {
    const named = new Set(
      this.list()
        .filter((r) => r.names.length > 0)
        .map((r) => r.manifestDigest),
    );
    const images: string[] = [];
    this.locked(() => {
      const index = this.readIndex();
      index.manifests = index.manifests.filter((m) => {
        if (named.has(m.digest)) return true;
        try {
          const id = this.readJson<Manifest>(m.digest).config.digest;
          if (inUse(id)) return true;
          images.push(id);
        } catch {
          // unreadable manifest: drop it
        }
        return false;
      });
      this.writeIndex(index);
    });
    return { images, freed: this.gc() };
  }

  /** Deletes blobs and unpacked layers that no manifest in index.json reaches. */
  gc(keep: ReadonlySet<string> = new Set()): number {
    const live = new Set<string>(keep);
    for (const m of this.readIndex().manifests) {
      live.add(digestHex(m.digest));
      try {
        const man = this.readJson<Manifest>(m.digest);
        live.add(digestHex(man.config.digest));
        for (const l of man.layers) live.add(digestHex(l.digest));
      } catch {
        // a broken manifest keeps nothing alive
      }
    }
    for (const hex of this.cacheReferences()) live.add(hex);
    let freed = 0;
    const blobs = join(this.layout, "blobs", "sha256");
    for (const name of readdirSync(blobs)) {
      if (live.has(name)) continue;
      freed += statSync(join(blobs, name)).size;
      rmSync(join(blobs, name), { force: true });
    }
    for (const name of readdirSync(this.layers)) {
      const hex = name.replace(/\..*$/, "");
      if (live.has(hex) && !name.includes(".tmp")) continue;
      rmSync(join(this.layers, name), { recursive: true, force: true });
    }
    return freed;
  }

  /** Blob hexes that the build cache keeps alive (layers of cached build steps). */
  private cacheReferences(): string[] {
    const path = join(this.root, "build-cache.json");
    if (!existsSync(path)) return [];
    try {
      const cache = JSON.parse(readFileSync(path, "utf8")) as Record<
        string,
        { layer?: string; config: string }
      >;
      const out: string[] = [];
      for (const v of Object.values(cache)) {
        if (v.layer && isDigest(v.layer)) out.push(digestHex(v.layer));
        if (isDigest(v.config)) out.push(digestHex(v.config));
      }
      return out;
    } catch {
      return [];
    }
  }

  /** The unpacked directory of one layer, unpacking it the first time. */
  async layerDir(layer: Descriptor): Promise<string> {
    const dir = join(this.layers, digestHex(layer.digest));
    if (existsSync(join(dir, ".vessel-complete"))) return join(dir, "root");
    const tmp = `${dir}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    await unpackLayer(this.blobPath(layer.digest), join(tmp, "root"));
    writeFileSync(join(tmp, ".vessel-complete"), `${layer.digest}\n`);
    try {
      renameSync(tmp, dir);
    } catch {
      // another process unpacked it first
      rmSync(tmp, { recursive: true, force: true });
    }
    return join(dir, "root");
  }

  /** Unpacked layer directories of an image, lowest layer first. */
  async layerDirs(img: ImageRecord): Promise<string[]> {
    const out: string[] = [];
    for (const l of img.manifest.layers) out.push(await this.layerDir(l));
    return out;
  }
}
