/**
 * bench/cpu-soft: CPU-bound work inside the default i386 guest, boot excluded: `sha256sum` of
 * 64 MiB read from /dev/zero, and `gzip -c` of generated text (`seq`, made before the timing),
 * under Vessel's software CPU with the binary translator (`bt`) and with the interpreter
 * (`interp`), and under `qemu-system-i386 -accel tcg`, with the same kernel, initramfs and command.
 *
 * The guest prints `@@bench <name> start|end <uptime>` around each workload; the host timestamps
 * those lines as they arrive on the serial console. That host time is the figure: on Vessel's soft
 * engine the guest clock is virtual (10 ns per instruction retired, engines/soft/instruction_clock.ts),
 * so the guest's own uptime delta counts instructions rather than seconds; it is printed too (on
 * QEMU it is real time), and on Vessel it gives the guest MIPS of the workload (uptime delta x 100 M
 * instructions per virtual second, over host seconds). Reports ratios; asserts no time.
 *   node dist/bench/cpu-soft/run.js [--mib 64] [--only bt,interp,qemu]
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SoftTechnique } from "../../src/engines/soft/technique.js";
import { ensureDefaultGuest } from "../../src/guest/default_guest.js";
import { guestCommandParam } from "../../src/guest/init_script.js";
import { DEBUG_EXIT_PORT } from "../../src/memory/layout.js";
import { MarkerWatch, runVesselChild } from "../boot-soft/vessel_child.js";

const ROWS = ["bt", "interp", "qemu"] as const;
type Row = (typeof ROWS)[number];
const LABEL: Record<Row, string> = { bt: "Vessel bt", interp: "Vessel interp", qemu: "QEMU TCG" };
const WORKLOADS = ["sha256", "gzip"] as const;

const argv = process.argv.slice(2);
const arg = (name: string) => {
  const k = argv.indexOf(name);
  return k >= 0 ? argv[k + 1] : undefined;
};
const mib = Number(arg("--mib") ?? 64);
const only = new Set<string>(arg("--only")?.split(",") ?? ROWS);
const MEM = 256 << 20;
const TIMEOUT_MS = 1_200_000;

const script = [
  "u() { cut -d' ' -f1 /proc/uptime; }",
  "seq 1 200000 > /tmp/d",
  'echo "@@bench sha256 start $(u)"',
  `dd if=/dev/zero bs=1M count=${mib} 2>/dev/null | sha256sum`,
  'echo "@@bench sha256 end $(u)"',
  'echo "@@bench gzip start $(u)"',
  "gzip -c /tmp/d | wc -c",
  'echo "@@bench gzip end $(u)"',
].join("\n");

const guest = ensureDefaultGuest("i386", (m) => console.error(m));
const cmdline = `${guest.cmdline} ${guestCommandParam(["sh", "-c", script])}`;

interface Result {
  /** Host seconds per workload, between the console markers. */
  host: Record<string, number>;
  /** The guest's own uptime delta per workload (virtual on Vessel). */
  guestClock: Record<string, number>;
  rssKiB?: number;
  console: string;
}

function collect(markers: MarkerWatch["markers"], text: string, rssKiB?: number): Result | string {
  const host: Record<string, number> = {};
  const guestClock: Record<string, number> = {};
  for (const w of WORKLOADS) {
    const m = markers[w];
    if (m?.start === undefined || m.end === undefined)
      return `the guest did not print both markers of ${w}; console:\n${text.slice(-800)}`;
    host[w] = (m.end - m.start) / 1000;
    const s = new RegExp(`@@bench ${w} start ([\\d.]+)`).exec(text);
    const e = new RegExp(`@@bench ${w} end ([\\d.]+)`).exec(text);
    if (s !== null && e !== null) guestClock[w] = Number(e[1]) - Number(s[1]);
  }
  return { host, guestClock, console: text, ...(rssKiB === undefined ? {} : { rssKiB }) };
}

async function vessel(technique: SoftTechnique): Promise<Result | string> {
  const r = await runVesselChild({
    engine: "soft",
    technique,
    kernel: guest.kernel,
    initrd: guest.initrd,
    cmdline,
    memBytes: MEM,
    cpus: 1,
    timeoutMs: TIMEOUT_MS,
  });
  if (typeof r === "string") return r;
  return collect(r.markers, r.console, r.maxRssKiB);
}

/** QEMU TCG with the console on a pipe; isa-debug-exit on the status port ends it after the command. */
function qemu(): Promise<Result | string> {
  if (spawnSync("qemu-system-i386", ["--version"]).status !== 0)
    return Promise.resolve("qemu-system-i386 is not installed");
  const dir = mkdtempSync(join(tmpdir(), "vessel-bench-"));
  const rssFile = join(dir, "rss");
  const qemuArgs = [
    "qemu-system-i386",
    "-accel",
    "tcg",
    "-m",
    String(MEM >> 20),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-no-reboot",
    "-device",
    `isa-debug-exit,iobase=0x${(DEBUG_EXIT_PORT + 1).toString(16)},iosize=0x1`,
    "-kernel",
    guest.kernel,
    "-initrd",
    guest.initrd,
    "-append",
    cmdline,
  ];
  const timed = existsSync("/usr/bin/time");
  const child = timed
    ? spawn("/usr/bin/time", ["-f", "%M", "-o", rssFile, ...qemuArgs], { stdio: ["pipe", "pipe", "inherit"] })
    : spawn(qemuArgs[0]!, qemuArgs.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
  const t0 = performance.now();
  const watch = new MarkerWatch(() => performance.now() - t0);
  let all = "";
  child.stdout.on("data", (d: Buffer) => {
    const s = d.toString("latin1");
    all += s;
    watch.feed(s);
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUT_MS);
  return new Promise((resolve) => {
    child.on("close", () => {
      clearTimeout(timer);
      let rss: number | undefined;
      try {
        rss = Number(readFileSync(rssFile, "utf8").trim().split("\n").pop());
      } catch {
        rss = undefined;
      }
      rmSync(dir, { recursive: true, force: true });
      resolve(collect(watch.markers, all, rss !== undefined && Number.isFinite(rss) ? rss : undefined));
    });
  });
}

if (!existsSync(guest.kernel)) throw new Error("no default i386 guest");
console.log(
  `bench/cpu-soft: sha256sum of ${mib} MiB from /dev/zero and gzip -c of seq 1 200000 (1.2 MB) in the default i386 guest, ${MEM >> 20} MiB, 1 CPU; host seconds between console markers (boot excluded)`,
);
const results = new Map<Row, Result>();
const why = new Map<Row, string>();
for (const row of ROWS) {
  if (!only.has(row)) continue;
  const r = row === "qemu" ? await qemu() : await vessel(row);
  if (typeof r === "string") why.set(row, r);
  else results.set(row, r);
  console.error(`  ${LABEL[row]}: ${typeof r === "string" ? r : JSON.stringify(r.host)}`);
}
const q = results.get("qemu");
const header = ["", ...WORKLOADS.flatMap((w) => [w, "/QEMU", "guest clock", "guest MIPS"]), "peak RSS"];
const table: string[][] = [header];
for (const row of ROWS) {
  if (!only.has(row)) continue;
  const r = results.get(row);
  if (r === undefined) {
    table.push([LABEL[row], why.get(row) ?? "no result"]);
    continue;
  }
  const cells = [LABEL[row]];
  for (const w of WORKLOADS) {
    const s = r.host[w]!;
    const g = r.guestClock[w];
    cells.push(
      `${s.toFixed(2)} s`,
      q === undefined ? "" : (s / q.host[w]!).toFixed(2),
      g === undefined ? "" : `${g.toFixed(2)} s`,
      // Vessel's guest clock is 100 M instructions per virtual second.
      row !== "qemu" && g !== undefined ? ((g * 100) / s).toFixed(0) : "",
    );
  }
  cells.push(r.rssKiB === undefined ? "" : `${(r.rssKiB / 1024).toFixed(0)} MiB`);
  table.push(cells);
}
const widths = header.map((_, c) => Math.max(...table.map((r) => (r[c] ?? "").length)));
for (const r of table) {
  if (r.length === 2) console.log(`${r[0]!.padEnd(widths[0]!)}  ${r[1]}`);
  else
    console.log(
      r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  "),
    );
}
console.log(
  "guest clock: the guest's /proc/uptime delta (Vessel: virtual, 10 ns per instruction; QEMU: real time). guest MIPS (Vessel): that clock's instructions over host seconds. peak RSS: Vessel's VMM child process / QEMU (GNU time), whole run.",
);
const sums = [...results.values()].map((r) => r.console.match(/^[0-9a-f]{64}/m)?.[0]);
if (new Set(sums.filter(Boolean)).size > 1)
  console.log(`warning: the guests printed different sha256 sums: ${sums.join(" ")}`);
process.exit(0);
