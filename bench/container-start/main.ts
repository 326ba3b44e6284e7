/**
 * Container start-up: vessel-runc against runc and crun (Debian's packages), side by side in
 * one run, on the same busybox bundle whose process is `true`.
 *
 *   run                    `<runtime> run` (create + start + wait + delete in one call)
 *   create+start+delete    three calls, as podman makes them (waiting for the exit in between)
 *   podman run --rm        podman with --runtime set to each runtime
 *
 * crun needs cgroups v1 without the almost empty v2 mount this host has beside them, so its
 * runs happen in a private mount namespace where /sys/fs/cgroup/unified is unmounted (this
 * program re-executes itself there with `unshare -m`). Prints median milliseconds and the
 * ratios of vessel-runc to runc and crun. "vessel-runc" is the launcher with its runtime server
 * (how podman uses it); "vessel-direct" is the same launcher with VESSEL_RUNC_DIRECT=1, paying a
 * Node start-up per call. Usage (as root, after `npm run build`):
 *
 *   node dist/bench/container-start/main.js [--iterations 20] [--no-podman]
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultSpec } from "../../src/container/default_spec.js";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const VESSEL = join(REPO, "native/build/vessel-runc");
const SELF = fileURLToPath(import.meta.url);

type Mode = "run" | "create+start+delete";
interface Result {
  runtime: string;
  mode: string;
  ms: number[];
  error?: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0
    ? Number.NaN
    : (s[Math.floor((s.length - 1) / 2)]! + s[Math.ceil((s.length - 1) / 2)]!) / 2;
}

/** busybox-static from Debian (apt-get download + dpkg-deb -x), cached under /tmp. */
function busybox(): string {
  const cache = join(tmpdir(), "vessel-bench-busybox");
  const bin = join(cache, "x/bin/busybox");
  if (existsSync(bin)) return bin;
  mkdirSync(cache, { recursive: true });
  const dl = spawnSync("apt-get", ["download", "busybox-static"], { cwd: cache, encoding: "utf8" });
  const deb = readdirSync(cache).find((f) => f.startsWith("busybox-static") && f.endsWith(".deb"));
  if (!deb) throw new Error(`apt-get download busybox-static failed: ${dl.stderr}`);
  spawnSync("dpkg-deb", ["-x", join(cache, deb), join(cache, "x")]);
  if (!existsSync(bin)) throw new Error("busybox-static did not unpack");
  return bin;
}

function makeBundle(): string {
  const dir = mkdtempSync(join(tmpdir(), "vessel-bench-"));
  const rootfs = join(dir, "rootfs");
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc"])
    mkdirSync(join(rootfs, d), { recursive: true });
  spawnSync("cp", [busybox(), join(rootfs, "bin/busybox")]);
  chmodSync(join(rootfs, "bin/busybox"), 0o755);
  for (const c of ["true", "sh"]) symlinkSync("busybox", join(rootfs, "bin", c));
  const spec = defaultSpec();
  spec.process!.terminal = false;
  spec.process!.args = ["/bin/true"];
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec, null, 1));
  return dir;
}

function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** One runtime, one mode, `n` times; returns the wall time of each. */
function measure(
  runtime: string,
  argv0: string[],
  bundle: string,
  mode: Mode,
  n: number,
  env: NodeJS.ProcessEnv = process.env,
): Result {
  const root = mkdtempSync(join(tmpdir(), "vessel-bench-root-"));
  // The container's init inherits the runtime's stdio (as under conmon), so a pipe would stay open
  // until the container ends: stdout goes nowhere and stderr to a file.
  const errFile = join(root, "stderr");
  const rt = (args: string[]) => {
    const fd = openSync(errFile, "w");
    try {
      const r = spawnSync(argv0[0]!, [...argv0.slice(1), "--root", root, ...args], {
        stdio: ["ignore", "ignore", fd],
        env,
      });
      return { status: r.status, stderr: readFileSync(errFile, "utf8") };
    } finally {
      closeSync(fd);
    }
  };
  const ms: number[] = [];
  try {
    // as podman's first calls do: for vessel-runc this starts the runtime server (twice: a server
    // left from an older build answers once and exits)
    rt(["list"]);
    rt(["list"]);
    for (let i = -1; i < n; i++) {
      const id = `bench-${process.pid}-${i + 1}`;
      const t0 = performance.now();
      if (mode === "run") {
        const r = rt(["run", "--bundle", bundle, id]);
        if (r.status !== 0) return { runtime, mode, ms, error: r.stderr.trim() || `exit ${r.status}` };
      } else {
        const pidFile = join(root, `${id}.pid`);
        const c = rt(["create", "--bundle", bundle, "--pid-file", pidFile, id]);
        if (c.status !== 0) return { runtime, mode, ms, error: c.stderr.trim() || `exit ${c.status}` };
        const pid = Number(readFileSync(pidFile, "utf8"));
        const s = rt(["start", id]);
        if (s.status !== 0) return { runtime, mode, ms, error: s.stderr.trim() };
        // the exit is reaped by init (no subreaper here); poll for it as conmon would be told
        for (let k = 0; k < 2000 && alive(pid); k++)
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        const d = rt(["delete", id]);
        if (d.status !== 0) return { runtime, mode, ms, error: d.stderr.trim() };
      }
      if (i >= 0) ms.push(performance.now() - t0); // the first run warms caches and is not counted
    }
    return { runtime, mode, ms };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function podmanImage(bundle: string): string | undefined {
  const tar = join(bundle, "rootfs.tar");
  spawnSync("tar", ["-C", join(bundle, "rootfs"), "-cf", tar, "."]);
  const r = spawnSync("podman", ["import", tar, "localhost/vessel-bench-busybox:latest"], {
    encoding: "utf8",
  });
  return r.status === 0 ? "localhost/vessel-bench-busybox:latest" : undefined;
}

function measurePodman(runtime: string, path: string, image: string, n: number): Result {
  const ms: number[] = [];
  const args = [
    "--cgroup-manager=cgroupfs",
    "--events-backend=file",
    "--runtime",
    path,
    "run",
    "--rm",
    "--network=none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    image,
    "true",
  ];
  for (let i = -1; i < n; i++) {
    const t0 = performance.now();
    const r = spawnSync("podman", args, { encoding: "utf8" });
    if (r.status !== 0)
      return { runtime, mode: "podman run --rm", ms, error: r.stderr.trim().split("\n").at(-1) ?? "" };
    if (i >= 0) ms.push(performance.now() - t0);
  }
  return { runtime, mode: "podman run --rm", ms };
}

function inner(argv: string[]): void {
  // in a private mount namespace: make crun see a pure v1 host
  spawnSync("umount", ["/sys/fs/cgroup/unified"]);
  const [bundle, n, podman] = [argv[0]!, Number(argv[1]), argv[2] === "podman"];
  const out: Result[] = [];
  for (const mode of ["run", "create+start+delete"] as Mode[])
    out.push(measure("crun", ["/usr/bin/crun"], bundle, mode, n));
  if (podman) {
    const image = podmanImage(bundle);
    if (image) out.push(measurePodman("crun", "/usr/bin/crun", image, n));
  }
  process.stdout.write(JSON.stringify(out));
}

function main(): void {
  const args = process.argv.slice(2);
  if (args[0] === "--inner") {
    inner(args.slice(1));
    return;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write("bench/container-start: needs root (namespaces and cgroups)\n");
    process.exit(2);
  }
  const it = args.indexOf("--iterations");
  const n = it >= 0 ? Number(args[it + 1]) : 20;
  const withPodman = !args.includes("--no-podman") && spawnSync("podman", ["--version"]).status === 0;
  if (!existsSync(VESSEL)) throw new Error(`${VESSEL} is missing: run npm run build`);
  const bundle = makeBundle();
  const results: Result[] = [];
  try {
    for (const mode of ["run", "create+start+delete"] as Mode[]) {
      results.push(measure("vessel-runc", [VESSEL], bundle, mode, n));
      results.push(
        measure("vessel-direct", [VESSEL], bundle, mode, n, { ...process.env, VESSEL_RUNC_DIRECT: "1" }),
      );
      if (existsSync("/usr/sbin/runc")) results.push(measure("runc", ["/usr/sbin/runc"], bundle, mode, n));
    }
    if (existsSync("/usr/bin/crun")) {
      const r = spawnSync(
        "unshare",
        [
          "-m",
          "--propagation",
          "private",
          process.execPath,
          SELF,
          "--inner",
          bundle,
          String(n),
          withPodman ? "podman" : "",
        ],
        {
          encoding: "utf8",
        },
      );
      try {
        results.push(...(JSON.parse(r.stdout) as Result[]));
      } catch {
        results.push({ runtime: "crun", mode: "run", ms: [], error: r.stderr.trim() || "no output" });
      }
    }
    if (withPodman) {
      const image = podmanImage(bundle);
      if (image) {
        results.push(measurePodman("vessel-runc", VESSEL, image, Math.min(n, 10)));
        results.push(measurePodman("runc", "/usr/sbin/runc", image, Math.min(n, 10)));
      }
    }
  } finally {
    rmSync(bundle, { recursive: true, force: true });
  }
  const lines: string[] = [];
  lines.push(
    `container start, busybox true, median of ${n} (podman: ${Math.min(n, 10)}) after one warm-up run`,
  );
  lines.push(`${"mode".padEnd(22)}${"runtime".padEnd(15)}${"median ms".padStart(10)}  vs runc  vs crun`);
  for (const mode of ["run", "create+start+delete", "podman run --rm"]) {
    const of = (rt: string) => results.find((r) => r.mode === mode && r.runtime === rt);
    const base = (rt: string) => median(of(rt)?.ms ?? []);
    for (const rt of ["vessel-runc", "vessel-direct", "runc", "crun"]) {
      const r = of(rt);
      if (!r) continue;
      if (r.error) {
        lines.push(`${mode.padEnd(22)}${rt.padEnd(15)}  failed: ${r.error.slice(0, 100)}`);
        continue;
      }
      const m = median(r.ms);
      const ratio = (b: number) => (Number.isFinite(b) ? `${(m / b).toFixed(2)}x` : "-").padStart(7);
      lines.push(
        `${mode.padEnd(22)}${rt.padEnd(15)}${m.toFixed(1).padStart(10)}${ratio(base("runc"))} ${ratio(base("crun"))}`,
      );
    }
  }
  process.stdout.write(`${lines.join("\n")}\n`);
}

main();
