/**
 * bench/boot-soft: boot-to-userspace of the default i386 guest (Debian's 686 kernel, busybox
 * initramfs, `cryptomgr.notests` on the command line) on Vessel's software CPU, side by side with
 * `qemu-system-i386 -accel tcg` and, when installed, v86 (the npm package `v86`, with Debian's
 * seabios bios.bin and vgabios-stdvga.bin), in one run. The moment is the guest init's write to
 * the debug-exit port (DEBUG_EXIT_PORT + 0): Vessel reports it through its debug-exit device,
 * QEMU gets an isa-debug-exit device on the same port (QEMU ends at that write), v86 (with its JIT,
 * and interpreter-only with disable_jit) is watched on its serial console for the line the init
 * prints next to the marker. Times are from launch; the ratios are printed.
 *   node dist/bench/boot-soft/run.js [rounds=1] [--only vessel,vesselbz,qemu,v86,v86i]
 */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ensureDefaultGuest } from "../../src/guest/default_guest.js";
import { guestCommandParam } from "../../src/guest/init_script.js";
import { Vm } from "../../src/vm/vm.js";
import { qemuBootToMarker } from "../qemu_marker.js";

const argv = process.argv.slice(2);
const onlyAt = argv.indexOf("--only");
const only = new Set(
  onlyAt >= 0 ? argv[onlyAt + 1]!.split(",") : ["vessel", "vesselbz", "qemu", "v86", "v86i"],
);
const rounds = Number(argv.find((a, k) => /^\d+$/.test(a) && argv[k - 1] !== "--only") ?? 1);
const MEM = 256 << 20;
const TIMEOUT_MS = 600_000;

const guest = ensureDefaultGuest("i386", (m) => console.error(m));
const cmdline = `${guest.cmdline} ${guestCommandParam(["true"])}`;

/** CPU seconds this process used during the last in-process run (Vessel's worker, v86). */
const cpuSeconds: Record<string, number> = {};
const cpuSince = (u0: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(u0);
  return (u.user + u.system) / 1e6;
};

/**
 * Vessel's soft engine. `decompress` (the default of `vessel vm run`) has the VMM unpack vmlinux
 * from the bzImage; without it the guest runs the kernel's own xz decompressor (about 2.3 G of the
 * 3.4 G instructions to userspace), as QEMU and v86 do: both are reported so the ratio is fair.
 */
async function vessel(decompress: boolean): Promise<number> {
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  let userspace: number | undefined;
  const vm = Vm.start(
    {
      engine: "soft",
      kernel: guest.kernel,
      initrd: guest.initrd,
      cmdline,
      memBytes: MEM,
      cpus: 1,
      timeoutMs: TIMEOUT_MS,
      decompress,
    },
    {
      onUserspace: () => {
        userspace ??= performance.now() - t0;
      },
    },
  );
  const r = await vm.wait();
  cpuSeconds[decompress ? "vessel" : "vesselbz"] = cpuSince(u0);
  if (userspace === undefined) throw new Error(`Vessel: the guest did not reach userspace: ${r.detail}`);
  return userspace;
}

function qemu(): number | string {
  return qemuBootToMarker({
    binary: "qemu-system-i386",
    machine: ["-accel", "tcg"],
    memMiB: MEM >> 20,
    kernel: guest.kernel,
    initrd: guest.initrd,
    cmdline,
    timeoutMs: TIMEOUT_MS,
  });
}

const BIOS = "/usr/share/seabios/bios.bin";
const VGA_BIOS = "/usr/share/seabios/vgabios-stdvga.bin";

/** v86 in this process (its own interpreter/JIT), if the npm package and SeaBIOS are installed. */
async function v86(jit: boolean): Promise<number | string> {
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
  return await new Promise<number | string>((resolve) => {
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
    // v86 emits every port write it does not claim as "emulator-..."? It has no generic hook, so
    // watch the serial console for the init's banner line, written just after the marker.
    let line = "";
    emulator.add_listener("serial0-output-byte", (byte: unknown) => {
      const ch = String.fromCharCode(byte as number);
      line = ch === "\n" ? "" : line + ch;
      if (line.includes("Vessel default guest") || line.includes("vessel: userspace started")) {
        clearTimeout(timer);
        const ms = performance.now() - t0;
        cpuSeconds[jit ? "v86" : "v86i"] = cpuSince(u0);
        emulator.stop();
        emulator.destroy();
        resolve(ms);
      }
    });
  });
}

if (!existsSync(guest.kernel)) throw new Error("no default i386 guest");
console.log(`bench/boot-soft: boot to userspace, ${rounds} round(s), ${MEM >> 20} MiB, 1 CPU`);
const results: Record<string, number[]> = { vessel: [], vesselbz: [], qemu: [], v86: [], v86i: [] };
for (let i = 0; i < rounds; i++) {
  const skipped = "not selected";
  const tv = only.has("vessel") ? await vessel(true) : skipped;
  if (typeof tv === "number") results.vessel!.push(tv);
  const tb = only.has("vesselbz") ? await vessel(false) : skipped;
  if (typeof tb === "number") results.vesselbz!.push(tb);
  const tq = only.has("qemu") ? qemu() : skipped;
  if (typeof tq === "number") results.qemu!.push(tq);
  const t8 = only.has("v86") ? await v86(true) : skipped;
  if (typeof t8 === "number") results.v86!.push(t8);
  const t8i = only.has("v86i") ? await v86(false) : skipped;
  if (typeof t8i === "number") results.v86i!.push(t8i);
  const show = (t: number | string) => (typeof t === "number" ? `${(t / 1000).toFixed(2)} s` : t);
  console.log(
    `  round ${i + 1}  Vessel soft ${show(tv)}   Vessel soft, bzImage as is ${show(tb)}   QEMU TCG ${show(tq)}   v86 JIT ${show(t8)}   v86 interpreter ${show(t8i)}`,
  );
  // On a loaded host wall time depends on the share of CPU each run got; CPU time does not.
  console.log(
    `           CPU seconds: ${Object.entries(cpuSeconds)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`)
      .join(", ")}`,
  );
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
const mv = results.vessel!.length > 0 ? median(results.vessel!) : Number.NaN;
let summary = Number.isNaN(mv)
  ? "median: Vessel soft not run"
  : `median: Vessel soft ${(mv / 1000).toFixed(2)} s`;
const mb = results.vesselbz!.length > 0 ? median(results.vesselbz!) : Number.NaN;
if (results.vesselbz!.length > 0)
  summary += `, Vessel soft with the bzImage as is ${(mb / 1000).toFixed(2)} s`;
/** "Vessel/peer a (bzImage as is: b)": both Vessel figures against one peer. */
const ratios = (m: number) =>
  `Vessel/peer ${(mv / m).toFixed(2)}${Number.isNaN(mb) ? "" : `; bzImage as is ${(mb / m).toFixed(2)}`}`;
if (results.qemu!.length > 0) {
  const mq = median(results.qemu!);
  summary += `, QEMU TCG ${(mq / 1000).toFixed(2)} s (${ratios(mq)})`;
}
if (results.v86!.length > 0) {
  const m8 = median(results.v86!);
  summary += `, v86 JIT ${(m8 / 1000).toFixed(2)} s (${ratios(m8)})`;
}
if (results.v86i!.length > 0) {
  const m8 = median(results.v86i!);
  summary += `, v86 interpreter ${(m8 / 1000).toFixed(2)} s (${ratios(m8)})`;
}
console.log(summary);
process.exit(0);
