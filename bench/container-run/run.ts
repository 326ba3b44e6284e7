/**
 * `vessel container run --rm IMAGE true` against `podman run --rm` with runc on the same image (a
 * busybox image Vessel builds and hands to podman with `image save` / `podman load`), and the time
 * to build the same build file with `vessel image build` and `podman build`. One run, side by
 * side; prints medians and ratios. Needs root, runc and podman.
 *
 *   npx tsc -p . && node dist/bench/container-run/run.js [RUNS]
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const RUNS = Number(process.argv[2] ?? 10);
const CLI = new URL("../../../bin/vessel.js", import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), "vessel-bench-run-"));
const env = { ...process.env, VESSEL_ROOT: root };
const PODMAN = ["--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime", "runc"];
const ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
const TAG = "localhost/vessel-bench-busybox:latest";

function sh(cmd: string, args: string[], extraEnv: NodeJS.ProcessEnv = env): { ms: number; out: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env: extraEnv, encoding: "utf8", maxBuffer: 64 << 20 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return { ms, out: r.stdout };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const BUILD_FILE = `FROM ${TAG}
ENV APP=/srv/www
WORKDIR /srv/www
COPY index.html ./
RUN echo built > built.txt && mkdir -p /etc/app && echo conf > /etc/app/conf
RUN rm -rf /home && ls / > /listing.txt
CMD ["httpd", "-f", "-p", "80", "-h", "/srv/www"]
`;

try {
  sh(process.execPath, [CLI, "image", "build", "--base", "busybox", "-t", TAG]);
  const archive = join(root, "busybox.tar");
  sh(process.execPath, [CLI, "image", "save", "-o", archive, TAG]);
  sh("podman", [...PODMAN, "load", "-i", archive]);
  console.log(`container run: ${RUNS} rounds after one warm-up round, same busybox image (${TAG});`);
  console.log("each round runs every variant once, so a change in the host's load hits them alike\n");
  const vessel = (extra: NodeJS.ProcessEnv, net: string[]) => () =>
    sh(process.execPath, [CLI, "container", "run", "--rm", ...net, TAG, "true"], { ...env, ...extra }).ms;
  const podman = (net: string[]) => () =>
    sh("podman", [...PODMAN, "run", "--rm", ...ULIMITS, ...net, TAG, "true"]).ms;
  const variants: [string, () => number][] = [
    ["vessel run --rm --network none IMAGE true (runtime library)", vessel({}, ["--network", "none"])],
    ["podman run --rm --network none IMAGE true (runc)", podman(["--network", "none"])],
    ["vessel run --rm IMAGE true (bridge, runtime library)", vessel({}, [])],
    ["podman run --rm IMAGE true (bridge, runc)", podman([])],
    [
      "vessel run --rm --network none (runc CLI)",
      vessel({ VESSEL_OCI_RUNTIME: "runc" }, ["--network", "none"]),
    ],
    [
      "vessel run --rm --network none (vessel-runc CLI)",
      vessel({ VESSEL_OCI_RUNTIME: "vessel-runc" }, ["--network", "none"]),
    ],
  ];
  const times: number[][] = variants.map(() => []);
  for (let round = 0; round <= RUNS; round++) {
    variants.forEach(([, fn], i) => {
      const ms = fn();
      if (round > 0) times[i]!.push(ms);
    });
  }
  const med = times.map(median);
  variants.forEach(([label], i) => {
    const xs = times[i]!;
    console.log(
      `${label.padEnd(60)} median ${med[i]!.toFixed(1).padStart(7)} ms  (min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)})`,
    );
  });
  console.log(`\nratio vessel/podman, --network none: ${(med[0]! / med[1]!).toFixed(2)}`);
  console.log(`ratio vessel/podman, bridge:         ${(med[2]! / med[3]!).toFixed(2)}`);
  console.log(`ratio vessel (runc CLI)/podman, --network none:        ${(med[4]! / med[1]!).toFixed(2)}`);
  console.log(`ratio vessel (vessel-runc CLI)/podman, --network none: ${(med[5]! / med[1]!).toFixed(2)}`);

  const ctx = join(root, "ctx");
  spawnSync("mkdir", ["-p", ctx]);
  writeFileSync(join(ctx, "index.html"), "<h1>bench</h1>\n");
  writeFileSync(join(ctx, "Dockerfile"), BUILD_FILE);
  const vb = sh(process.execPath, [CLI, "image", "build", "--no-cache", "-q", "-t", "bench:web", ctx]).ms;
  const vbCached = sh(process.execPath, [CLI, "image", "build", "-q", "-t", "bench:web", ctx]).ms;
  const pb = sh("podman", [
    ...PODMAN,
    "build",
    "--no-cache",
    "-q",
    ...ULIMITS,
    "-t",
    "localhost/bench-web",
    ctx,
  ]).ms;
  const pbCached = sh("podman", [...PODMAN, "build", "-q", ...ULIMITS, "-t", "localhost/bench-web", ctx]).ms;
  console.log(`\nbuild file (7 steps, 2 RUN, 1 COPY), one run each:`);
  console.log(`  vessel image build --no-cache ${vb.toFixed(0)} ms, cached ${vbCached.toFixed(0)} ms`);
  console.log(`  podman build --no-cache       ${pb.toFixed(0)} ms, cached ${pbCached.toFixed(0)} ms`);
  console.log(
    `  ratio vessel/podman: ${(vb / pb).toFixed(2)} uncached, ${(vbCached / pbCached).toFixed(2)} cached`,
  );
} finally {
  for (const image of [TAG, "localhost/bench-web"])
    spawnSync("podman", [...PODMAN, "rmi", "-f", image], { encoding: "utf8" });
  spawnSync("umount", ["-R", root]);
  rmSync(root, { recursive: true, force: true });
}
