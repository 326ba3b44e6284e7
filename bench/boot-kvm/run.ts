/**
 * bench/boot-kvm: boot-to-userspace of the default amd64 guest on the KVM engine, side by side with
 * `qemu-system-x86_64 -M microvm -accel kvm` on the same kernel, initramfs and command line. The
 * moment is the guest init's write to the debug-exit port (DEBUG_EXIT_PORT + 0): Vessel reports it
 * through its debug-exit device; QEMU gets an isa-debug-exit device on the same port, which ends
 * QEMU at that write. Both are timed from launch, in one run, and the ratio is printed.
 * On a host whose KVM cannot boot Linux (no /dev/kvm, or PVM) it says so and exits 0.
 *   node dist/bench/boot-kvm/run.js [rounds=3]
 */
import { existsSync } from "node:fs";
import { isPvm } from "../../src/engines/kvm/system.js";
import { ensureDefaultGuest } from "../../src/guest/default_guest.js";
import { guestCommandParam } from "../../src/guest/init_script.js";
import { probeEngine } from "../../src/vm/engine_probe.js";
import { Vm } from "../../src/vm/vm.js";
import { qemuBootToMarker } from "../qemu_marker.js";

const rounds = Number(process.argv[2] ?? 3);
const MEM = 256 << 20;

const choice = probeEngine();
if (choice.engine !== "kvm") {
  console.log(
    `bench/boot-kvm: this host's KVM cannot boot Linux (${isPvm() ? "/dev/kvm is PVM, a nested software hypervisor" : choice.reason}); nothing to measure`,
  );
  process.exit(0);
}
const guest = ensureDefaultGuest("amd64", (m) => console.error(m));
const cmdline = `${guest.cmdline} ${guestCommandParam(["true"])}`;

async function vessel(): Promise<number> {
  const t0 = performance.now();
  let userspace: number | undefined;
  const vm = Vm.start(
    {
      engine: "kvm",
      kernel: guest.kernel,
      initrd: guest.initrd,
      cmdline,
      memBytes: MEM,
      cpus: 1,
      timeoutMs: 120000,
    },
    {
      onUserspace: () => {
        userspace ??= performance.now() - t0;
      },
    },
  );
  const r = await vm.wait();
  if (userspace === undefined) throw new Error(`Vessel: the guest did not reach userspace: ${r.detail}`);
  return userspace;
}

function qemu(): number | string {
  return qemuBootToMarker({
    binary: "qemu-system-x86_64",
    machine: ["-M", "microvm", "-accel", "kvm", "-cpu", "host"],
    memMiB: MEM >> 20,
    kernel: guest.kernel,
    initrd: guest.initrd,
    cmdline,
    timeoutMs: 120000,
  });
}

if (!existsSync(guest.kernel)) throw new Error("no default guest");
console.log(`bench/boot-kvm: boot to userspace, ${rounds} rounds, ${MEM >> 20} MiB, 1 CPU`);
const v: number[] = [];
const q: number[] = [];
for (let i = 0; i < rounds; i++) {
  const tv = await vessel();
  v.push(tv);
  const tq = qemu();
  if (typeof tq === "number") q.push(tq);
  console.log(
    `  round ${i + 1}  Vessel ${tv.toFixed(1)} ms   QEMU microvm ${typeof tq === "number" ? `${tq.toFixed(1)} ms` : tq}`,
  );
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
if (q.length > 0) {
  console.log(
    `median: Vessel ${median(v).toFixed(1)} ms, QEMU ${median(q).toFixed(1)} ms, ratio ${(median(v) / median(q)).toFixed(2)}`,
  );
} else {
  console.log(`median: Vessel ${median(v).toFixed(1)} ms (no QEMU reference)`);
}
