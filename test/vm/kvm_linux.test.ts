/**
 * Debian's amd64 kernel on the KVM engine, end to end: `vessel vm run --engine kvm` boots the default
 * amd64 guest (64-bit entry, ACPI, in-kernel irqchip) on 1 and 2 vCPUs, runs a command, and exits
 * with the command's status. This needs hardware KVM: on a host whose /dev/kvm is PVM (the nested
 * software hypervisor `kvm_pvm`, which cannot boot stock kernels) it skips and says so; the KVM
 * engine is covered there by the payload tests in test/engines/kvm/.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { cachedGuest } from "../../src/guest/default_guest.js";
import { probeEngine } from "../../src/vm/engine_probe.js";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const VESSEL = join(ROOT, "bin/vessel.js");

function skipReason(): string | undefined {
  const probe = probeEngine();
  if (probe.engine !== "kvm") return `needs hardware KVM that boots Linux: ${probe.reason}`;
  if (cachedGuest("amd64") === undefined) {
    return "the default amd64 guest is not built (node bin/vessel.js guest build --arch amd64)";
  }
  return undefined;
}

for (const cpus of [1, 2]) {
  test(`Debian's amd64 kernel boots on the KVM engine with ${cpus} vCPU(s) and returns the command's status`, (t) => {
    const reason = skipReason();
    if (reason !== undefined) return t.skip(reason);
    const r = spawnSync(
      process.execPath,
      [
        VESSEL,
        "vm",
        "run",
        "--engine",
        "kvm",
        "--cpus",
        String(cpus),
        "--stats",
        "--timeout",
        "120",
        "--",
        "sh",
        "-c",
        "uname -m; grep -c ^processor /proc/cpuinfo; exit 7",
      ],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 150_000 },
    );
    assert.equal(
      r.status,
      7,
      `vessel exited ${r.status}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`,
    );
    assert.match(r.stdout, /\bx86_64\b/);
    assert.match(r.stdout, new RegExp(`^${cpus}\\s*$`, "m"));
    assert.match(r.stdout + r.stderr, /exits/i, "--stats reports the VM exits");
  });
}
