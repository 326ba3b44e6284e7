/**
 * bench/boot-soft: boot-to-userspace of the default i386 guest (Debian's 686 kernel, busybox
 * initramfs, `cryptomgr.notests` on the command line), the same kernel, initramfs and command line
 * for all, in one run: Vessel's software CPU with the binary translator (`bt`) and with the
 * interpreter (`interp`), each with the VMM decompressing the kernel (the default) and with the
 * bzImage as is (the guest's own decompressor, as QEMU and v86 boot it); `qemu-system-i386 -accel
 * tcg`; and, when installed, v86 (the npm package, with Debian's seabios) with its JIT and
 * interpreter-only. The moment is the guest init's write to the debug-exit port: Vessel reports
 * it through its debug-exit device, QEMU gets an isa-debug-exit device on the same port (QEMU ends
 * there), v86 is watched on its serial console for the line the init prints next to the marker.
 * Each Vessel run is a child process of its own (vessel_child.ts), so its peak RSS is the VMM's;
 * QEMU's is taken by GNU time. Reports ratios; asserts no time.
 *   node dist/bench/boot-soft/run.js [rounds=1] [--only bt,interp,btbz,interpbz,qemu,v86,v86i]
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { SoftTechnique } from "../../src/engines/soft/technique.js";
import { ensureDefaultGuest } from "../../src/guest/default_guest.js";
import { guestCommandParam } from "../../src/guest/init_script.js";
import { qemuBootToMarker } from "../qemu_marker.js";
import { runVesselChild } from "./vessel_child.js";

const ALL = ["bt", "interp", "btbz", "interpbz", "qemu", "v86", "v86i"] as const;
type Row = (typeof ALL)[number];
const LABEL: Record<Row, string> = {
  bt: "Vessel bt",
  interp: "Vessel interp",
  btbz: "Vessel bt, bzImage as is",
  interpbz: "Vessel interp, bzImage as is",
  qemu: "QEMU TCG",
  v86: "v86 JIT",
  v86i: "v86 interpreter",
};

const argv = process.argv.slice(2);
const onlyAt = argv.indexOf("--only");
const only = new Set<string>(onlyAt >= 0 ? argv[onlyAt + 1]!.split(",") : ALL);
for (const o of only)
  if (!(ALL as readonly string[]).includes(o))
    throw new Error(`--only: unknown "${o}"; use ${ALL.join(",")}`);
const rounds = Number(argv.find((a, k) => /^\d+$/.test(a) && argv[k - 1] !== "--only") ?? 1);
const MEM = 256 << 20;
const TIMEOUT_MS = 600_000;

const guest = ensureDefaultGuest("i386", (m) => console.error(m));
const cmdline = `${guest.cmdline} ${guestCommandParam(["true"])}`;

interface Measure {
  ms: number;
  /** Guest instructions over the whole run (boot, `true`, power-off) and its wall time. */
  instructions?: number;
  wallMs?: number;
  translateMs?: number;
  cacheBlocks?: number;
  blocksTranslated?: number;
  rssKiB?: number;
  cpuSeconds?: number;
}

async function vessel(technique: SoftTechnique, decompress: boolean): Promise<Measure | string> {
  const r = await runVesselChild({
    engine: "soft",
    technique,
    kernel: guest.kernel,
    initrd: guest.initrd,
    cmdline,
    memBytes: MEM,
    cpus: 1,
    timeoutMs: TIMEOUT_MS,
    decompress,
  });
  if (typeof r === "string") return r;
  if (r.userspaceMs === undefined) return `the guest did not reach userspace: ${r.reason}: ${r.detail}`;
  const bt = r.bt as { translateNs?: number; cacheBlocks?: number; blocksTranslated?: number } | undefined;
  return {
    ms: r.userspaceMs,
    wallMs: r.wallMs,
    rssKiB: r.maxRssKiB,
    ...(r.instructions === undefined ? {} : { instructions: r.instructions }),
    ...(bt?.translateNs === undefined ? {} : { translateMs: bt.translateNs / 1e6 }),
    ...(bt?.cacheBlocks === undefined ? {} : { cacheBlocks: bt.cacheBlocks }),
    ...(bt?.blocksTranslated === undefined ? {} : { blocksTranslated: bt.blocksTranslated }),
  };
}

function qemu(): Measure | string {
  if (!existsSync("/usr/bin/time")) {
    const ms = qemuBootToMarker({
      binary: "qemu-system-i386",
      machine: ["-accel", "tcg"],
      memMiB: MEM >> 20,
      kernel: guest.kernel,
      initrd: guest.initrd,
      cmdline,
      timeoutMs: TIMEOUT_MS,
    });
    return typeof ms === "string" ? ms : { ms };
  }
  // GNU time (Debian package time) around QEMU records its peak RSS.
  const dir = mkdtempSync(join(tmpdir(), "vessel-bench-"));
  try {
    const rssFile = join(dir, "rss");
    const ms = qemuBootToMarker({
      binary: "/usr/bin/time",
      machine: ["-f", "%M", "-o", rssFile, "qemu-system-i386", "-accel", "tcg"],
      memMiB: MEM >> 20,
      kernel: guest.kernel,
      initrd: guest.initrd,
      cmdline,
      timeoutMs: TIMEOUT_MS,
    });
    if (typeof ms === "string") return ms;
    const rss = Number(readFileSync(rssFile, "utf8").trim().split("\n").pop());
    return { ms, ...(Number.isFinite(rss) ? { rssKiB: rss } : {}) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const BIOS = "/usr/share/seabios/bios.bin";
const VGA_BIOS = "/usr/share/seabios/vgabios-stdvga.bin";

/** v86 in this process (its own interpreter/JIT), if the npm package and SeaBIOS are installed. */
async function v86(jit: boolean): Promise<Measure | string> {
  let V86: new (
    opts: Record<string, unknown>,
  ) => {
    add_listener(ev: string, f: (...a: unknown[]) => void): void;
    destroy(): void;
    stop(): void;
  };
  try {
    const name = "v86";
    const mod = (await import(name)) as { V86?: typeof V86; default?: { V86?: typeof V86 } };
    const ctor = mod.V86 ?? mod.default?.V86;
    if (ctor === undefined) return "the v86 package has no V86 export";
    V86 = ctor;
  } catch {
    return "v86 is not installed (it is a devDependency: npm install)";
  }
  if (!existsSync(BIOS) || !existsSync(VGA_BIOS)) return "Debian's seabios package is not installed";
  // The package's main module sits next to its wasm files (build/libv86.mjs, build/v86.wasm).
  const wasmPath = fileURLToPath(new URL("v86.wasm", import.meta.resolve("v86")));
  const buf = (p: string) => {
    const b = readFileSync(p);
    return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) };
  };
  const u0 = process.cpuUsage();
  return await new Promise<Measure | string>((resolve) => {
    const t0 = performance.now();
    const emulator = new V86({
      bios: buf(BIOS),
      vga_bios: buf(VGA_BIOS),
      bzimage: buf(guest.kernel),
      initrd: buf(guest.initrd),
      cmdline,
      memory_size: MEM,
      autostart: true,
      wasm_path: wasmPath,
      disable_jit: !jit,
      disable_keyboard: true,
      disable_mouse: true,
    });
    const timer = setTimeout(() => {
      emulator.destroy();
      resolve("v86 did not reach the marker in time");
    }, TIMEOUT_MS);
    // v86 has no hook for port writes it does not claim: watch the serial console for the
    // init's line written just after the marker.
    let line = "";
    emulator.add_listener("serial0-output-byte", (byte: unknown) => {
      const ch = String.fromCharCode(byte as number);
      line = ch === "\n" ? "" : line + ch;
      if (line.includes("Vessel default guest") || line.includes("vessel: userspace started")) {
        clearTimeout(timer);
        const ms = performance.now() - t0;
        const u = process.cpuUsage(u0);
        emulator.stop();
        emulator.destroy();
        resolve({ ms, cpuSeconds: (u.user + u.system) / 1e6 });
      }
    });
  });
}

async function measure(row: Row): Promise<Measure | string> {
  switch (row) {
    case "bt":
      return vessel("bt", true);
    case "interp":
      return vessel("interp", true);
    case "btbz":
      return vessel("bt", false);
    case "interpbz":
      return vessel("interp", false);
    case "qemu":
      return qemu();
    case "v86":
      return v86(true);
    case "v86i":
      return v86(false);
  }
}

if (!existsSync(guest.kernel)) throw new Error("no default i386 guest");
console.log(
  `bench/boot-soft: boot to userspace of the default i386 guest, ${rounds} round(s), ${MEM >> 20} MiB, 1 CPU, same kernel, initramfs and command line for all`,
);
const results = new Map<Row, Measure[]>();
const why = new Map<Row, string>();
for (let i = 0; i < rounds; i++) {
  for (const row of ALL) {
    if (!only.has(row)) continue;
    const m = await measure(row);
    if (typeof m === "string") why.set(row, m);
    else results.set(row, [...(results.get(row) ?? []), m]);
    console.error(
      `  round ${i + 1} ${LABEL[row]}: ${typeof m === "string" ? m : `${(m.ms / 1000).toFixed(2)} s`}`,
    );
  }
}

/** The round with the median time to the marker. */
const median = (a: Measure[]) => [...a].sort((x, y) => x.ms - y.ms)[Math.floor(a.length / 2)]!;
const med = new Map<Row, Measure>([...results].map(([k, v]) => [k, median(v)]));
const q = med.get("qemu")?.ms;
const j = med.get("v86")?.ms;
const cols = [
  "",
  "to marker",
  "/QEMU TCG",
  "/v86 JIT",
  "guest MIPS",
  "translate",
  "cache blocks",
  "peak RSS",
];
const table: string[][] = [cols];
for (const row of ALL) {
  if (!only.has(row)) continue;
  const m = med.get(row);
  if (m === undefined) {
    table.push([LABEL[row], why.get(row) ?? "no result"]);
    continue;
  }
  const mips =
    m.instructions !== undefined && m.wallMs !== undefined
      ? (m.instructions / m.wallMs / 1000).toFixed(0)
      : "";
  const share =
    m.translateMs !== undefined && m.wallMs !== undefined
      ? `${((100 * m.translateMs) / m.wallMs).toFixed(1)} %`
      : "";
  table.push([
    LABEL[row],
    `${(m.ms / 1000).toFixed(2)} s`,
    q === undefined ? "" : (m.ms / q).toFixed(2),
    j === undefined ? "" : (m.ms / j).toFixed(2),
    mips,
    share,
    m.cacheBlocks === undefined ? "" : `${m.cacheBlocks} (${m.blocksTranslated} made)`,
    m.rssKiB === undefined ? "" : `${(m.rssKiB / 1024).toFixed(0)} MiB`,
  ]);
}
const widths = cols.map((_, c) => Math.max(...table.map((r) => (r[c] ?? "").length)));
for (const r of table) {
  if (r.length === 2) console.log(`${r[0]!.padEnd(widths[0]!)}  ${r[1]}`);
  else
    console.log(
      r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  "),
    );
}
console.log(
  "guest MIPS: guest instructions of the whole run (boot, `true`, power-off) over its wall time; translate: the translator's host time as a share of that wall time; cache blocks: blocks in the code cache at the end (blocks translated in all); peak RSS: the VMM process (Vessel: the child running the machine; QEMU: GNU time's maximum resident set). v86 runs in this process (no separate RSS).",
);
process.exit(0);
