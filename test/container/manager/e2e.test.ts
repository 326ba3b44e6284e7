import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { get } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cacheDir } from "../../../src/container/build/base_images.js";
import { Manager } from "../../../src/container/manager/manager.js";

/**
 * End to end: the `vessel` CLI as a user types it, as root, with runc, overlayfs, iproute2 and
 * iptables, in a private VESSEL_ROOT. Each part skips with its reason when the host lacks it.
 */

const CLI = new URL("../../../../bin/vessel.js", import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), "vessel-e2e-"));
const env = { ...process.env, VESSEL_ROOT: root };

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (namespaces, overlayfs, cgroups, iptables)";
  for (const tool of ["runc", "ip", "iptables", "mount"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  const probe = mkdtempSync(join(tmpdir(), "vessel-ovl-"));
  for (const d of ["l", "u", "w", "m"]) mkdirSync(join(probe, d));
  const ok =
    spawnSync("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${probe}/l,upperdir=${probe}/u,workdir=${probe}/w`,
      `${probe}/m`,
    ]).status === 0;
  if (ok) spawnSync("umount", [`${probe}/m`]);
  rmSync(probe, { recursive: true, force: true });
  return ok ? undefined : "overlayfs mounts fail on this host";
}

const skipReason = missing();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function vessel(args: string[], timeoutMs = 60_000, input?: string): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env,
      stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    if (input !== undefined) child.stdin!.end(input);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (b: Buffer) => (stdout += b.toString()));
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function ok(args: string[], timeoutMs?: number): Promise<string> {
  const r = await vessel(args, timeoutMs);
  assert.equal(r.code, 0, `vessel ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function fetchPage(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: "127.0.0.1", port, path: "/", timeout: 3000 }, (res) => {
      let body = "";
      res.on("data", (b: Buffer) => (body += b.toString()));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

async function retry<T>(fn: () => Promise<T>, tries = 30): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= tries) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

let baseReady: string | undefined;

before(async () => {
  if (skipReason) return;
  const r = await vessel(["image", "build", "--base", "busybox"], 180_000);
  baseReady =
    r.code === 0
      ? undefined
      : `cannot make the busybox base image (apt-get download busybox-static): ${r.stderr.trim()}`;
});

after(async () => {
  if (!skipReason) {
    const m = new Manager(root);
    for (const v of m.list(true)) await m.remove(v.config.id, true).catch(() => undefined);
  }
  spawnSync("umount", ["-R", root]);
  rmSync(root, { recursive: true, force: true });
});

function need(t: { skip(reason: string): void }): boolean {
  const why = skipReason ?? baseReady;
  if (why) t.skip(why);
  return why === undefined;
}

const BUILD_FILE = `FROM busybox
ARG GREETING=hello
ENV APP_HOME=/srv/www
WORKDIR $APP_HOME
COPY index.html ./
RUN echo "$GREETING from a build step" > greeting.txt && rm -rf /home
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/srv/www"]
`;

function context(): string {
  const dir = mkdtempSync(join(root, "ctx-"));
  writeFileSync(join(dir, "index.html"), "<h1>served by vessel</h1>\n");
  writeFileSync(join(dir, "Dockerfile"), BUILD_FILE);
  return dir;
}

test("a build file builds an image; an unchanged rebuild comes from the cache", async (t) => {
  if (!need(t)) return;
  const ctx = context();
  const first = await vessel(["image", "build", "-t", "web:test", ctx], 120_000);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stderr, /STEP 6\/8: RUN echo/);
  const second = await vessel(["image", "build", "-t", "web:test", ctx]);
  assert.equal(second.code, 0, second.stderr);
  assert.equal((second.stderr.match(/--> CACHED/g) ?? []).length, 6, second.stderr);
  assert.equal(second.stdout, first.stdout, "same image id");
  writeFileSync(join(ctx, "index.html"), "<h1>changed</h1>\n");
  const third = await vessel(["image", "build", "-t", "web:changed", ctx]);
  assert.equal(third.code, 0, third.stderr);
  assert.equal(
    (third.stderr.match(/--> CACHED/g) ?? []).length,
    2,
    "ENV and WORKDIR before COPY come from the cache, COPY and after run again",
  );
  assert.equal(
    await ok(["container", "run", "--rm", "web:changed", "cat", "index.html"]),
    "<h1>changed</h1>\n",
  );
  const out = await ok([
    "container",
    "run",
    "--rm",
    "web:test",
    "sh",
    "-c",
    "cat greeting.txt; pwd; test -e /home || echo home-deleted",
  ]);
  assert.equal(out, "hello from a build step\n/srv/www\nhome-deleted\n");
  const inspect = JSON.parse(await ok(["image", "inspect", "web:test"]));
  assert.deepEqual(inspect[0].Config.ExposedPorts, { "80/tcp": {} });
});

test("a failing build step names the step and shows its output", async (t) => {
  if (!need(t)) return;
  const noop = mkdtempSync(join(root, "ctx-noop-"));
  writeFileSync(join(noop, "Dockerfile"), 'FROM busybox\nRUN true\nCMD ["echo", "empty layer ok"]\n');
  await ok(["image", "build", "-q", "-t", "noop:test", noop]);
  assert.equal(
    await ok(["container", "run", "--rm", "noop:test"]),
    "empty layer ok\n",
    "a step that changes nothing",
  );
  const dir = mkdtempSync(join(root, "ctx-bad-"));
  writeFileSync(join(dir, "Dockerfile"), "FROM busybox\nRUN echo about to fail; echo oops >&2; exit 7\n");
  const r = await vessel(["image", "build", "-t", "bad:test", dir]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /STEP 2\/2: RUN echo about to fail.*failed with exit code 7/);
  const shown = r.stderr.slice(r.stderr.indexOf("--- output of the step ---"));
  assert.match(shown, /about to fail/);
  assert.match(shown, /oops/);
});

test("a web server in a container answers on a published port; rm leaves nothing behind", async (t) => {
  if (!need(t)) return;
  const ctx = context();
  await ok(["image", "build", "-q", "-t", "web:test", ctx], 120_000);
  const port = await freePort();
  const id = (await ok(["container", "run", "-d", "--name", "web1", "-p", `${port}:80`, "web:test"])).trim();
  assert.match(id, /^[0-9a-f]{64}$/);
  const page = await retry(() => fetchPage(port));
  assert.equal(page, "<h1>served by vessel</h1>\n");
  const ps = await ok(["container", "ps"]);
  assert.match(ps, new RegExp(`${id.slice(0, 12)}.*Up .*0\\.0\\.0\\.0:${port}->80/tcp.*web1`));
  const m = new Manager(root);
  const monitorPid = m.view(id).state.monitorPid;
  assert.ok(monitorPid);
  await ok(["container", "rm", "-f", "web1"]);
  assert.deepEqual(m.leftovers(id, monitorPid), []);
  await assert.rejects(fetchPage(port));
});

test("containers on the bridge reach each other by address; --network none has only loopback", async (t) => {
  if (!need(t)) return;
  await ok(["image", "build", "-q", "-t", "web:test", context()], 120_000);
  const id = (await ok(["container", "run", "-d", "web:test"])).trim();
  const ip = JSON.parse(await ok(["container", "inspect", id]))[0].NetworkSettings.IPAddress as string;
  assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
  const page = await retry(
    () => ok(["container", "run", "--rm", "busybox", "wget", "-qO-", `http://${ip}/`]),
    10,
  );
  assert.equal(page, "<h1>served by vessel</h1>\n");
  const links = await ok([
    "container",
    "run",
    "--rm",
    "--network",
    "none",
    "busybox",
    "ls",
    "/sys/class/net",
  ]);
  assert.equal(links.trim(), "lo");
  await ok(["container", "rm", "-f", id]);
});

test("a named volume keeps data across containers", async (t) => {
  if (!need(t)) return;
  await ok([
    "container",
    "run",
    "--rm",
    "-v",
    "e2edata:/data",
    "busybox",
    "sh",
    "-c",
    "echo kept > /data/file",
  ]);
  const out = await ok([
    "container",
    "run",
    "--rm",
    "-v",
    "e2edata:/data:ro",
    "busybox",
    "cat",
    "/data/file",
  ]);
  assert.equal(out, "kept\n");
  const ro = await vessel([
    "container",
    "run",
    "--rm",
    "-v",
    "e2edata:/data:ro",
    "busybox",
    "touch",
    "/data/x",
  ]);
  assert.notEqual(ro.code, 0, "a :ro volume refuses writes");
});

test("--memory kills a process that exceeds it and ps -a shows exit 137", async (t) => {
  if (!need(t)) return;
  const r = await vessel([
    "container",
    "run",
    "--name",
    "hog",
    "--memory",
    "16m",
    "busybox",
    "sh",
    "-c",
    "x=a; while true; do x=$x$x; done",
  ]);
  assert.equal(r.code, 137);
  const ps = await ok(["container", "ps", "-a"]);
  assert.match(ps, /Exited \(137\).*hog/);
  await ok(["container", "rm", "hog"]);
});

test("--cpus and --pids-limit reach the container's cgroup; stats reads it", async (t) => {
  if (!need(t)) return;
  if (!existsSync("/sys/fs/cgroup/cpu") || !existsSync("/sys/fs/cgroup/pids"))
    return t.skip("needs the cgroup v1 cpu and pids hierarchies");
  const id = (
    await ok(["container", "run", "-d", "--cpus", "0.5", "--pids-limit", "20", "busybox", "sleep", "30"])
  ).trim();
  const read = (p: string) => readFileSync(p, "utf8").trim();
  assert.equal(read(`/sys/fs/cgroup/cpu/vessel/${id}/cpu.cfs_quota_us`), "50000");
  assert.equal(read(`/sys/fs/cgroup/pids/vessel/${id}/pids.max`), "20");
  const stats = await ok(["container", "stats", "--no-stream", id]);
  assert.match(stats, new RegExp(`${id.slice(0, 12)}\\s+\\S+\\s+[\\d.]+%`));
  await ok(["container", "rm", "-f", id]);
});

test("logs, logs --tail and logs -f of a detached container", async (t) => {
  if (!need(t)) return;
  const id = (
    await ok([
      "container",
      "run",
      "-d",
      "busybox",
      "sh",
      "-c",
      "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo err >&2",
    ])
  ).trim();
  const followed = await ok(["container", "logs", "-f", id], 20_000);
  assert.equal(followed, "line1\nline2\nline3\n");
  const tail = await vessel(["container", "logs", "--tail", "1", id]);
  assert.equal(tail.stdout, "");
  assert.equal(tail.stderr, "err\n");
  const stamped = await ok(["container", "logs", "-t", "--tail", "2", id]);
  assert.match(stamped, /^\d{4}-\d\d-\d\dT[\d:.]+Z line3\n$/);
  await ok(["container", "rm", id]);
  const attached = await vessel([
    "container",
    "run",
    "--name",
    "attached",
    "busybox",
    "sh",
    "-c",
    "echo shown; exit 4",
  ]);
  assert.equal(attached.code, 4);
  assert.equal(attached.stdout, "shown\n");
  assert.equal(
    await ok(["container", "logs", "attached"]),
    "shown\n",
    "an attached run's output is in the log too",
  );
  await ok(["container", "rm", "attached"]);
});

test("-i gives the container the caller's stdin", async (t) => {
  if (!need(t)) return;
  const r = await vessel(
    ["container", "run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"],
    30_000,
    "shout\n",
  );
  assert.equal(r.stdout, "SHOUT\n", r.stderr);
});

test("-t gives the container a pty of its own, proxied to the caller's terminal", async (t) => {
  if (!need(t)) return;
  if (spawnSync("python3", ["-c", "import pty"]).status !== 0) return t.skip("needs python3's pty module");
  // the CLI runs on a pty (as a user's terminal), sized 30x90; the container must get a new one
  const driver = `
import os, pty, struct, fcntl, termios, sys
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try: d = os.read(fd, 4096)
    except OSError: break
    if not d: break
    out += d
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.stdout.write("exit=%d\\n" % os.waitstatus_to_exitcode(status))
`;
  const script = "tty; test -t 0 && echo is-a-tty; stty size </dev/tty";
  const r = spawnSync(
    "python3",
    ["-c", driver, process.execPath, CLI, "container", "run", "--rm", "-t", "busybox", "sh", "-c", script],
    { env, encoding: "utf8", timeout: 30_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\/dev\/pts\/\d+/, r.stdout);
  assert.match(r.stdout, /is-a-tty/, r.stdout);
  assert.match(r.stdout, /^30 90\r?\r?$/m, "the container's pty has the caller's window size");
  assert.match(r.stdout, /exit=0/, r.stdout);
});

test("exec runs in a running container and returns the command's exit code", async (t) => {
  if (!need(t)) return;
  const id = (await ok(["container", "run", "-d", "--name", "execme", "busybox", "sleep", "60"])).trim();
  const host = await ok(["container", "exec", "execme", "hostname"]);
  assert.equal(host.trim(), id.slice(0, 12));
  const r = await vessel(["container", "exec", "-e", "X=42", "execme", "sh", "-c", "echo $X; exit 5"]);
  assert.equal(r.code, 5);
  assert.equal(r.stdout, "42\n");
  await ok(["container", "stop", "-t", "1", "execme"]);
  const stopped = await vessel(["container", "exec", "execme", "true"]);
  assert.equal(stopped.code, 1);
  assert.match(stopped.stderr, /not running/);
  await ok(["container", "rm", "execme"]);
});

test("--restart on-failure:2 restarts twice, then the container stays exited", async (t) => {
  if (!need(t)) return;
  const id = (
    await ok([
      "container",
      "run",
      "-d",
      "--restart",
      "on-failure:2",
      "busybox",
      "sh",
      "-c",
      "echo run; exit 3",
    ])
  ).trim();
  const m = new Manager(root);
  await retry(async () => {
    const s = m.view(id).state;
    if (s.status !== "exited" || s.restartCount !== 2) throw new Error(JSON.stringify(s));
  }, 100);
  assert.equal(await ok(["container", "logs", id]), "run\nrun\nrun\n");
  assert.equal(JSON.parse(await ok(["container", "inspect", id]))[0].State.ExitCode, 3);
  await ok(["container", "rm", id]);
});

test("start runs a stopped container again with the files it wrote", async (t) => {
  if (!need(t)) return;
  const id = (
    await ok(["container", "run", "-d", "busybox", "sh", "-c", "echo run >> /count; wc -l < /count"])
  ).trim();
  await ok(["container", "start", id]);
  const m = new Manager(root);
  await retry(async () => {
    const s = m.view(id).state;
    if (s.status !== "exited") throw new Error(s.status);
    if ((await ok(["container", "logs", id])) !== "1\n2\n") throw new Error("second run not logged yet");
  }, 100);
  await ok(["container", "rm", id]);
});

test("image save loads into podman, and podman save loads back", async (t) => {
  if (!need(t)) return;
  if (spawnSync("sh", ["-c", "command -v podman"]).status !== 0) return t.skip("podman is not installed");
  const archive = join(root, "busybox-save.tar");
  const tag = "localhost/vessel-e2e-roundtrip:latest";
  await ok(["image", "tag", "busybox", tag]);
  await ok(["image", "save", "-o", archive, tag]);
  const podman = (args: string[]) =>
    spawnSync("podman", ["--cgroup-manager=cgroupfs", "--events-backend=file", ...args], {
      encoding: "utf8",
    });
  const load = podman(["load", "-i", archive]);
  assert.equal(load.status, 0, load.stderr);
  const run = podman([
    "run",
    "--rm",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "none",
    tag,
    "echo",
    "hi from podman",
  ]);
  assert.equal(run.stdout, "hi from podman\n", run.stderr);
  const back = join(root, "from-podman.tar");
  const save = podman(["save", "-o", back, tag]);
  assert.equal(save.status, 0, save.stderr);
  podman(["rmi", tag]);
  await ok(["image", "rm", tag]);
  const loaded = await ok(["image", "load", "-i", back]);
  assert.match(loaded, /vessel-e2e-roundtrip/);
  assert.equal(
    await ok(["container", "run", "--rm", "vessel-e2e-roundtrip", "echo", "back in vessel"]),
    "back in vessel\n",
  );
});

test("bad input: unknown image, port in use, malformed -v and -p, bad flags", async (t) => {
  if (!need(t)) return;
  const unknown = await vessel(["container", "run", "--rm", "no-such-image", "true"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no such image: "no-such-image"/);
  for (const [flag, value, pattern] of [
    ["-v", "/tmp", /invalid -v "\/tmp"/],
    ["-v", "/tmp:relative", /container path must be absolute/],
    ["-p", "80", /invalid -p "80"/],
    ["-p", "99999:80", /not a port number/],
    ["--memory", "lots", /invalid --memory "lots"/],
    ["--network", "overlay", /invalid --network "overlay"/],
  ] as const) {
    const r = await vessel(["container", "run", "--rm", flag, value, "busybox", "true"]);
    assert.equal(r.code, 2, `${flag} ${value}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, "0.0.0.0", () => r()));
  const port = (blocker.address() as { port: number }).port;
  try {
    const r = await vessel([
      "container",
      "run",
      "-d",
      "--name",
      "clash",
      "-p",
      `${port}:80`,
      "busybox",
      "httpd",
      "-f",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`port 0\\.0\\.0\\.0:${port} is already in use`));
    const m = new Manager(root);
    const v = m.view("clash");
    assert.equal(v.state.status, "exited");
    assert.deepEqual(
      m.leftovers(v.config.id).filter((l) => l !== "state directory"),
      [],
    );
    await ok(["container", "rm", "clash"]);
  } finally {
    blocker.close();
  }
  const dup = await vessel(["container", "run", "--rm", "--bogus", "busybox"]);
  assert.equal(dup.code, 2);
  assert.match(dup.stderr, /unknown flag: --bogus/);
});

test("a Debian image from debootstrap runs (cached under the user's cache directory)", async (t) => {
  if (!need(t)) return;
  const cached =
    existsSync(cacheDir()) && readdirSync(cacheDir()).some((f) => /^debian-bookworm-minbase\.tar$/.test(f));
  if (!cached && process.env.CI) {
    return t.skip(
      `no cached debootstrap root filesystem in ${cacheDir()}; CI skips the several-minute debootstrap (run the tests once outside CI to cache it)`,
    );
  }
  await ok(["image", "build", "--base", "debian", "-t", "debian:e2e"], 900_000);
  const out = await ok([
    "container",
    "run",
    "--rm",
    "debian:e2e",
    "sh",
    "-c",
    "cat /etc/debian_version; dpkg -s base-files | grep -c Status",
  ]);
  assert.match(out, /^12\.\d+\n1\n$/);
});
