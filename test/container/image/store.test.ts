import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { importRootfs, loadArchive, saveImages } from "../../../src/container/image/archive.js";
import { findOpaqueDirs, unpackLayer } from "../../../src/container/image/layer.js";
import { normalizeName } from "../../../src/container/image/reference.js";
import { ImageStore } from "../../../src/container/image/store.js";
import { writeTreeTar } from "../../../src/container/image/tar_writer.js";

const isRoot = process.getuid?.() === 0;

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "vessel-image-test-"));
}

function tinyRootfs(dir: string): void {
  mkdirSync(join(dir, "bin"), { recursive: true });
  mkdirSync(join(dir, "etc"), { recursive: true });
  writeFileSync(join(dir, "etc", "os-release"), "NAME=tiny\n");
  writeFileSync(join(dir, "bin", "tool"), "#!/bin/sh\necho tool\n", { mode: 0o755 });
  symlinkSync("/bin/tool", join(dir, "bin", "alias"));
}

test("image names: default tag, registries with ports, malformed names refused", () => {
  assert.equal(normalizeName("busybox"), "busybox:latest");
  assert.equal(normalizeName("localhost:5000/team/app:1.2"), "localhost:5000/team/app:1.2");
  assert.throws(() => normalizeName("Busybox"), /invalid image name "Busybox"/);
  assert.throws(() => normalizeName("a::b"), /invalid image name/);
});

test("tar writer and layer unpack round-trip files, modes and symlinks", async () => {
  const dir = tmp();
  try {
    tinyRootfs(join(dir, "src"));
    const { digest, size } = writeTreeTar(join(dir, "src"), join(dir, "layer.tar"));
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(size % 512, 0);
    const listing = spawnSync("tar", ["tf", join(dir, "layer.tar")], { encoding: "utf8" }).stdout.split("\n");
    assert.deepEqual(listing.filter(Boolean), ["bin/", "bin/alias", "bin/tool", "etc/", "etc/os-release"]);
    await unpackLayer(join(dir, "layer.tar"), join(dir, "out"));
    assert.equal(readFileSync(join(dir, "out", "etc", "os-release"), "utf8"), "NAME=tiny\n");
    assert.equal(lstatSync(join(dir, "out", "bin", "tool")).mode & 0o777, 0o755);
    assert.ok(lstatSync(join(dir, "out", "bin", "alias")).isSymbolicLink());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an empty layer (a step that changed nothing) unpacks to an empty directory", async () => {
  const dir = tmp();
  try {
    mkdirSync(join(dir, "empty"));
    writeTreeTar(join(dir, "empty"), join(dir, "empty.tar"));
    const r = await unpackLayer(join(dir, "empty.tar"), join(dir, "out"));
    assert.equal(r.entries, 0);
    assert.ok(existsSync(join(dir, "out")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("layer unpack refuses paths that climb out or go through the archive's own symlinks", async () => {
  const dir = tmp();
  try {
    const evil = join(dir, "evil");
    mkdirSync(join(evil, "x"), { recursive: true });
    symlinkSync("/tmp", join(evil, "link"));
    writeTreeTar(evil, join(dir, "a.tar"));
    // append members "link/pwned" and "../escape" with GNU tar's --transform
    writeFileSync(join(dir, "pwned"), "no\n");
    spawnSync("tar", ["-rf", join(dir, "a.tar"), "-C", dir, "--transform", "s,^pwned,link/pwned,", "pwned"]);
    spawnSync("tar", [
      "-rf",
      join(dir, "a.tar"),
      "-C",
      dir,
      "-P",
      "--transform",
      "s,^pwned,../escape,",
      "pwned",
    ]);
    await unpackLayer(join(dir, "a.tar"), join(dir, "out"));
    assert.equal(existsSync("/tmp/pwned"), false);
    assert.equal(existsSync(join(dir, "escape")), false);
    assert.ok(lstatSync(join(dir, "out", "link")).isSymbolicLink());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("overlay whiteouts become OCI whiteouts in a diff, and back into overlay form on unpack", async (t) => {
  if (!isRoot) return t.skip("needs root: mknod of a 0/0 whiteout and trusted.* xattrs");
  if (spawnSync("setfattr", ["--version"]).error) return t.skip("setfattr missing (Debian package attr)");
  const dir = tmp();
  try {
    const upper = join(dir, "upper");
    mkdirSync(join(upper, "etc", "app"), { recursive: true });
    writeFileSync(join(upper, "etc", "app", "conf"), "x\n");
    spawnSync("mknod", [join(upper, "etc", "gone"), "c", "0", "0"]);
    spawnSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(upper, "etc", "app")]);
    const opaque = findOpaqueDirs(upper);
    assert.deepEqual([...opaque], ["etc/app"]);
    writeTreeTar(upper, join(dir, "diff.tar"), { overlayWhiteouts: true, opaqueDirs: opaque });
    const names = spawnSync("tar", ["tf", join(dir, "diff.tar")], { encoding: "utf8" })
      .stdout.split("\n")
      .filter(Boolean);
    assert.deepEqual(names, ["etc/", "etc/app/", "etc/app/.wh..wh..opq", "etc/app/conf", "etc/.wh.gone"]);
    const res = await unpackLayer(join(dir, "diff.tar"), join(dir, "lower"));
    assert.deepEqual(res.whiteouts, ["etc/gone"]);
    assert.deepEqual(res.opaque, ["etc/app"]);
    const st = lstatSync(join(dir, "lower", "etc", "gone"));
    assert.ok(st.isCharacterDevice() && st.rdev === 0);
    assert.deepEqual([...findOpaqueDirs(join(dir, "lower"))], ["etc/app"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("store: import, name, resolve by name and id prefix, docker-archive and OCI round trips, gc", async () => {
  const dir = tmp();
  try {
    const store = new ImageStore(join(dir, "root"));
    tinyRootfs(join(dir, "rootfs"));
    writeTreeTar(join(dir, "rootfs"), join(dir, "rootfs.tar"));
    spawnSync("gzip", ["-k", join(dir, "rootfs.tar")]);
    const img = await importRootfs(store, join(dir, "rootfs.tar.gz"), "tiny", { Cmd: ["/bin/tool"] });
    assert.deepEqual(img.names, ["tiny:latest"]);
    assert.equal(
      img.manifest.layers[0]!.digest,
      img.config.rootfs.diff_ids[0],
      "layers are stored uncompressed",
    );
    assert.equal(store.resolve("tiny").id, img.id);
    assert.equal(store.resolve(img.id.slice(7, 19)).id, img.id);
    assert.throws(() => store.resolve("nope"), /no such image: "nope"/);
    const index = JSON.parse(readFileSync(join(dir, "root", "image", "oci", "index.json"), "utf8"));
    assert.equal(index.manifests[0].annotations["org.opencontainers.image.ref.name"], "latest");

    saveImages(store, [{ img, name: "tiny:v1" }], join(dir, "docker.tar"), "docker-archive");
    const members = spawnSync("tar", ["tf", join(dir, "docker.tar")], { encoding: "utf8" })
      .stdout.split("\n")
      .filter(Boolean);
    assert.ok(members.includes("manifest.json") && members.includes("repositories"));
    const other = new ImageStore(join(dir, "other"));
    const [loaded] = await loadArchive(other, join(dir, "docker.tar"));
    assert.equal(loaded!.id, img.id, "same config bytes, same image id");
    assert.deepEqual(loaded!.names, ["tiny:v1"]);

    saveImages(store, [{ img }], join(dir, "oci.tar"), "oci-archive");
    const third = new ImageStore(join(dir, "third"));
    const [fromOci] = await loadArchive(third, join(dir, "oci.tar"));
    assert.equal(fromOci!.manifestDigest, img.manifestDigest);

    await assert.rejects(loadArchive(third, join(dir, "rootfs.tar")), /neither a docker-archive/);
    store.tag("tiny", "localhost/tiny:latest");
    assert.throws(
      () =>
        store.remove("tiny", { inUse: () => true }) && store.remove("localhost/tiny", { inUse: () => true }),
      /used by a container/,
    );
    assert.deepEqual(
      store.resolve(img.id.slice(7, 19)).names,
      ["localhost/tiny:latest"],
      "rm of one name keeps the other",
    );
    store.remove("localhost/tiny");
    const at = (created: string) =>
      importRootfs(store, join(dir, "rootfs.tar.gz"), "tiny", { Cmd: ["/bin/tool"] }, created);
    const first = await at("2024-01-01T00:00:00.000Z");
    assert.equal(
      (await at("2024-01-01T00:00:00.000Z")).id,
      first.id,
      "a fixed creation time gives the same image id",
    );
    await at("2025-01-01T00:00:00.000Z");
    assert.deepEqual(store.pruneDangling().images, [first.id], "the image that lost its name is dangling");
    store.remove("tiny");
    assert.equal(store.list().length, 0);
    assert.equal(store.hasBlob(img.manifest.layers[0]!.digest), false, "gc dropped the layer");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("load reads docker's classic save layout (<id>/layer.tar) and OCI layout directories", async () => {
  const dir = tmp();
  try {
    tinyRootfs(join(dir, "rootfs"));
    const arch = join(dir, "classic");
    mkdirSync(join(arch, "abc123"), { recursive: true });
    const { digest } = writeTreeTar(join(dir, "rootfs"), join(arch, "abc123", "layer.tar"));
    writeFileSync(join(arch, "abc123", "VERSION"), "1.0");
    const config = {
      architecture: "amd64",
      os: "linux",
      config: { Cmd: ["/bin/tool"] },
      rootfs: { type: "layers", diff_ids: [digest] },
    };
    writeFileSync(join(arch, "cfg.json"), JSON.stringify(config));
    writeFileSync(
      join(arch, "manifest.json"),
      JSON.stringify([
        { Config: "cfg.json", RepoTags: ["docker.io/library/tiny:1"], Layers: ["abc123/layer.tar"] },
      ]),
    );
    spawnSync("tar", ["-cf", join(dir, "classic.tar"), "-C", arch, "."]);
    const store = new ImageStore(join(dir, "root"));
    const [img] = await loadArchive(store, join(dir, "classic.tar"));
    assert.deepEqual(img!.names, ["docker.io/library/tiny:1"]);
    assert.equal(store.resolve("tiny:1").id, img!.id, "the short name finds a registry-qualified one");
    assert.deepEqual(img!.config.config?.Cmd, ["/bin/tool"]);

    saveImages(store, [{ img: img! }], join(dir, "layout"), "oci-dir");
    const other = new ImageStore(join(dir, "other"));
    const [again] = await loadArchive(other, join(dir, "layout"));
    assert.equal(again!.manifestDigest, img!.manifestDigest);
    assert.deepEqual(again!.names, ["docker.io/library/tiny:1"]);
    await assert.rejects(loadArchive(other, join(dir, "missing.tar")), /no such file or directory/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
