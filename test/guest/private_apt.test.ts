import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { GuestError } from "../../src/guest/guest_error.js";
import { aptListPrefix, PrivateApt, parseAptSources } from "../../src/guest/private_apt.js";

test("Debian sources are read from deb822 and one-line files; other repositories are ignored", () => {
  const sources = parseAptSources([
    {
      name: "debian.sources",
      text: `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`,
    },
    {
      name: "nodesource.sources",
      text: "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n",
    },
    {
      name: "sources.list",
      text: "deb [arch=amd64 signed-by=/etc/k.gpg] http://mirror.example.org/debian/ trixie main contrib\n# deb http://x/debian sid main\ndeb https://packages.cloud.google.com/apt cloud-sdk main\n",
    },
  ]);
  assert.deepEqual(sources, [
    {
      uri: "http://deb.debian.org/debian",
      suite: "bookworm",
      signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
    },
    {
      uri: "http://deb.debian.org/debian",
      suite: "bookworm-updates",
      signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
    },
    { uri: "http://deb.debian.org/debian-security", suite: "bookworm-security" },
    { uri: "http://mirror.example.org/debian/", suite: "trixie", signedBy: "/etc/k.gpg" },
  ]);
});

test("the private apt options point every state directory into Vessel's cache", () => {
  const apt = new PrivateApt("/cache/apt", "i386", [
    { uri: "http://deb.debian.org/debian", suite: "bookworm" },
  ]);
  const opts = apt.options().filter((o) => o !== "-o");
  for (const key of [
    "Dir::State",
    "Dir::State::status",
    "Dir::Cache",
    "Dir::Etc::SourceList",
    "Dir::Etc::SourceParts",
  ]) {
    const o = opts.find((x) => x.startsWith(`${key}=`));
    assert.ok(o?.startsWith(`${key}=/cache/apt/`), `${key}: ${o}`);
  }
  assert.ok(opts.includes("APT::Architecture=i386"));
});

test("a missing apt-get is reported with what to do instead", () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-apt-"));
  const path = process.env.PATH;
  try {
    process.env.PATH = dir; // no apt-get here
    const apt = new PrivateApt(join(dir, "apt"), "i386", [
      { uri: "http://deb.debian.org/debian", suite: "bookworm" },
    ]);
    assert.throws(
      () => apt.update(),
      (err: unknown) =>
        err instanceof GuestError && err.code === "GUEST_NO_APT" && /--kernel and --initrd/.test(err.message),
    );
  } finally {
    process.env.PATH = path;
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an unreachable mirror is reported with its address", (t) => {
  if (spawnSync("apt-get", ["--version"]).error) {
    t.skip("apt-get not installed");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "vessel-apt-"));
  try {
    // port 9 (discard) on localhost: connection refused at once
    const apt = new PrivateApt(join(dir, "apt"), "i386", [
      { uri: "http://127.0.0.1:9/debian", suite: "bookworm" },
    ]);
    assert.throws(
      () => apt.update(),
      (err: unknown) =>
        err instanceof GuestError &&
        err.code === "GUEST_MIRROR_UNREACHABLE" &&
        /127\.0\.0\.1:9\/debian/.test(err.message),
    );
    // and the host's apt state was not used: our lists directory exists, holding no Packages file
    assert.ok(existsSync(join(dir, "apt/state/lists")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("apt's list files are matched to their source by the URI without scheme, '/' as '_'", () => {
  assert.equal(aptListPrefix("http://deb.debian.org/debian"), "deb.debian.org_debian_");
  assert.equal(aptListPrefix("http://127.0.0.1:9/debian/"), "127.0.0.1:9_debian_");
  assert.equal(
    aptListPrefix("https://user@mirror.example/debian-security"),
    "mirror.example_debian-security_",
  );
});

test("a mirror that fails after another one worked is reported, not served from the old mirror's lists", (t) => {
  if (spawnSync("apt-get", ["--version"]).error) {
    t.skip("apt-get not installed");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "vessel-apt-"));
  try {
    // lists left by an earlier, successful update from another mirror
    mkdirSync(join(dir, "apt/state/lists"), { recursive: true });
    writeFileSync(
      join(dir, "apt/state/lists/deb.debian.org_debian_dists_bookworm_main_binary-i386_Packages"),
      "",
    );
    const apt = new PrivateApt(join(dir, "apt"), "i386", [
      { uri: "http://127.0.0.1:9/debian", suite: "bookworm" },
    ]);
    assert.throws(
      () => apt.update(),
      (err: unknown) => err instanceof GuestError && err.code === "GUEST_MIRROR_UNREACHABLE",
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
