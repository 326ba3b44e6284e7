/**
 * bench/exits: the cost of one VM exit handled in TypeScript against the same loop in C.
 * The guest executes `out dx, al` in a loop (32-bit protected mode, no irqchip); each OUT is a
 * KVM_EXIT_IO the VMM answers and re-enters. Vessel's side goes through the KVM engine's run loop
 * (runVcpu: koffi ioctl, one switch over the exit reason, an IoHandler call); the C side is
 * native/bench-exits/bench_exits.c (built by scripts/build-native.mjs). One run, both loops,
 * the ratio. A benchmark, not a test: nothing here asserts a time.
 *   node dist/bench/exits/run.js [exits=100000] [rounds=3]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AccessSize } from "../../src/bus/device.js";
import { flat32Entry } from "../../src/engines/kvm/payload_entry.js";
import { CONTROL_WORDS, type IoHandler, newExitCounters, runVcpu } from "../../src/engines/kvm/run_loop.js";
import { isPvm, KvmSystem } from "../../src/engines/kvm/system.js";
import { configureVcpu, KvmVcpu } from "../../src/engines/kvm/vcpu.js";
import { KVM_TSS_START } from "../../src/memory/layout.js";
import { mapAnonymous, viewHostMemory } from "../../src/sys/mman.js";

const here = dirname(fileURLToPath(import.meta.url));
const nativeBin = join(here, "../../../native/build/bench-exits");
const exits = Number(process.argv[2] ?? 100000);
const rounds = Number(process.argv[3] ?? 3);

/** mov ecx, n; mov dx, 0x80; 1: out dx, al; dec ecx; jnz 1b; hlt (the same bytes as the C side). */
function loopCode(n: number): Uint8Array {
  return Uint8Array.of(
    0xb9,
    n & 0xff,
    (n >>> 8) & 0xff,
    (n >>> 16) & 0xff,
    n >>> 24,
    0x66,
    0xba,
    0x80,
    0x00,
    0xee,
    0x49,
    0x75,
    0xfc,
    0xf4,
  );
}

function typescriptLoop(n: number): { exits: number; seconds: number; usPerExit: number } {
  const system = KvmSystem.open();
  const vm = system.createVm();
  vm.setTssAndIdentityMap(KVM_TSS_START, KVM_TSS_START - 0x1000);
  const size = 1 << 20;
  const address = mapAnonymous(size);
  vm.addMemory(0, size, address);
  const mem = new Uint8Array(viewHostMemory(address, size));
  mem.set(loopCode(n), 0x1000);
  const vcpu = new KvmVcpu(vm.createVcpu(0), 0, system.vcpuMmapSize);
  configureVcpu(vcpu, {
    supportedCpuid: system.supportedCpuid(),
    cpuCount: 1,
    irqchip: false,
    entry: flat32Entry(0x1000, 0x8000),
  });
  let count = 0;
  let t0 = 0;
  let sum = 0;
  const io: IoHandler = {
    pioIn: () => 0xff,
    pioOut: (_port: number, _size: AccessSize, value: number) => {
      if (count++ === 0) t0 = performance.now();
      sum += value;
    },
    mmioRead: () => 0,
    mmioWrite: () => {},
  };
  const event = runVcpu(
    vcpu,
    io,
    newExitCounters(),
    new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4)),
  );
  const seconds = (performance.now() - t0) / 1000;
  if (event.kind !== "hlt") throw new Error(`unexpected end of the loop: ${event.kind}`);
  vcpu.close();
  vm.close();
  system.close();
  void sum;
  return { exits: count, seconds, usPerExit: (seconds * 1e6) / (count - 1) };
}

function cLoop(n: number): { exits: number; seconds: number; usPerExit: number } | string {
  if (!existsSync(nativeBin)) return `${nativeBin} is not built (node scripts/build-native.mjs)`;
  const r = spawnSync(nativeBin, [String(n)], { encoding: "utf8" });
  if (r.status !== 0) return `bench-exits failed: ${r.stderr}`;
  const j = JSON.parse(r.stdout) as { exits: number; seconds: number; us_per_exit: number };
  return { exits: j.exits, seconds: j.seconds, usPerExit: j.us_per_exit };
}

if (!existsSync("/dev/kvm")) {
  console.log("bench/exits: no /dev/kvm on this host; nothing to measure");
  process.exit(0);
}
console.log(
  `bench/exits: ${exits} PIO exits per loop, ${rounds} rounds, alternating C and TypeScript${isPvm() ? " (host KVM is PVM)" : ""}`,
);
const ts: number[] = [];
const c: number[] = [];
for (let i = 0; i < rounds; i++) {
  const rc = cLoop(exits);
  if (typeof rc === "string") {
    console.log(rc);
  } else {
    c.push(rc.usPerExit);
    console.log(
      `  round ${i + 1}  C           ${rc.usPerExit.toFixed(2)} us/exit  (${rc.exits} exits in ${rc.seconds.toFixed(3)} s)`,
    );
  }
  const rt = typescriptLoop(exits);
  ts.push(rt.usPerExit);
  console.log(
    `  round ${i + 1}  TypeScript  ${rt.usPerExit.toFixed(2)} us/exit  (${rt.exits} exits in ${rt.seconds.toFixed(3)} s)`,
  );
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
if (c.length > 0) {
  const mt = median(ts);
  const mc = median(c);
  console.log(
    `median: TypeScript ${mt.toFixed(2)} us/exit, C ${mc.toFixed(2)} us/exit, ratio TS/C ${(mt / mc).toFixed(2)}`,
  );
} else {
  console.log(`median: TypeScript ${median(ts).toFixed(2)} us/exit (no C reference)`);
}
