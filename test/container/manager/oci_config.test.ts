import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { LogWriter, readLog, readLogFrom } from "../../../src/container/manager/log.js";
import { buildOciConfig, resolveUser } from "../../../src/container/manager/oci_config.js";
import type { ContainerConfig } from "../../../src/container/manager/state.js";

function rootfs(): string {
  const dir = mkdtempSync(join(tmpdir(), "vessel-oci-"));
  mkdirSync(join(dir, "etc"));
  writeFileSync(
    join(dir, "etc", "passwd"),
    "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33:www:/var/www:/bin/false\n",
  );
  writeFileSync(join(dir, "etc", "group"), "root:x:0:\nwww-data:x:33:\nlogs:x:40:web\n");
  return dir;
}

const base: ContainerConfig = {
  id: "a".repeat(64),
  name: "t",
  image: "busybox",
  imageId: "sha256:00",
  created: "",
  args: ["httpd", "-f"],
  env: ["PATH=/bin"],
  cwd: "/srv",
  user: "web",
  tty: true,
  interactive: false,
  detach: false,
  autoRemove: false,
  readOnly: true,
  network: "bridge",
  ports: [],
  volumes: [{ source: "/data", named: false, target: "/data", readonly: true }],
  memory: 64 * 1024 * 1024,
  cpus: 0.5,
  pidsLimit: 50,
  restart: { name: "no", maxRetries: 0 },
  hostname: "aaaaaaaaaaaa",
  stopSignal: "SIGTERM",
  labels: {},
};

test("users resolve by name, uid, uid:gid and user:group from the image's files", () => {
  const dir = rootfs();
  try {
    assert.deepEqual(resolveUser(dir, "web"), { uid: 33, gid: 33, additionalGids: [40], home: "/var/www" });
    assert.deepEqual(resolveUser(dir, ""), { uid: 0, gid: 0, additionalGids: [], home: "/root" });
    assert.deepEqual(resolveUser(dir, "1000:1000"), { uid: 1000, gid: 1000, additionalGids: [], home: "/" });
    assert.equal(resolveUser(dir, "web:logs").gid, 40);
    assert.throws(() => resolveUser(dir, "ghost"), /unable to find user "ghost"/);
    assert.throws(() => resolveUser(dir, "web:nogroup"), /unable to find group "nogroup"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the OCI config carries the run flags: user, env, limits, read-only root, volumes, network namespace", () => {
  const dir = rootfs();
  try {
    const spec = buildOciConfig({
      cfg: base,
      rootfs: dir,
      netnsPath: "/run/netns/vessel-aaaaaaaaaaaa",
      etcFiles: { hosts: "/h", hostname: "/n", resolv: "/r" },
      volumeSources: ["/data"],
      runtimeTerminal: false,
    }) as {
      process: {
        terminal: boolean;
        user: { uid: number; gid: number };
        env: string[];
        cwd: string;
        args: string[];
      };
      root: { readonly: boolean };
      mounts: { destination: string; options?: string[] }[];
      linux: {
        namespaces: { type: string; path?: string }[];
        resources: Record<string, unknown>;
        cgroupsPath: string;
      };
    };
    assert.equal(
      spec.process.terminal,
      false,
      "the library runtime hands the caller's terminal instead of a pty",
    );
    assert.deepEqual(spec.process.user, { uid: 33, gid: 33, additionalGids: [40] });
    assert.deepEqual(spec.process.env, ["PATH=/bin", "HOME=/var/www", "HOSTNAME=aaaaaaaaaaaa", "TERM=xterm"]);
    assert.equal(spec.process.cwd, "/srv");
    assert.equal(spec.root.readonly, true);
    assert.ok(
      spec.mounts.some((m) => m.destination === "/tmp"),
      "a read-only root gets a writable /tmp",
    );
    assert.deepEqual(spec.mounts.find((m) => m.destination === "/data")?.options, [
      "rbind",
      "rprivate",
      "ro",
    ]);
    assert.deepEqual(
      spec.linux.namespaces.find((n) => n.type === "network"),
      { type: "network", path: "/run/netns/vessel-aaaaaaaaaaaa" },
    );
    assert.deepEqual((spec.linux.resources.memory as { limit: number }).limit, 64 * 1024 * 1024);
    assert.deepEqual(spec.linux.resources.cpu, { quota: 50000, period: 100000 });
    assert.deepEqual(spec.linux.resources.pids, { limit: 50 });
    assert.equal(spec.linux.cgroupsPath, `/vessel/${"a".repeat(64)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("logs are docker json-file lines; partial lines wait for their end; tail and follow read them", () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-log-"));
  try {
    const path = join(dir, "log.json");
    const w = new LogWriter(path);
    w.write("stdout", "one\ntw");
    w.write("stderr", "err\n");
    const first = readLog(path);
    assert.deepEqual(
      first.lines.map((l) => [l.stream, l.log]),
      [
        ["stdout", "one\n"],
        ["stderr", "err\n"],
      ],
    );
    w.write("stdout", "o\nthree");
    w.close();
    const next = readLogFrom(path, first.offset);
    assert.deepEqual(
      next.lines.map((l) => l.log),
      ["two\n", "three"],
    );
    assert.deepEqual(
      readLog(path, 1).lines.map((l) => l.log),
      ["three"],
    );
    const line = JSON.parse(readFileSync(path, "utf8").split("\n")[0]!) as { time: string };
    assert.match(line.time, /^\d{4}-\d\d-\d\dT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
