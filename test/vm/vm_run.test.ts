import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { chooseEngine, type HostFacts, probeEngine, readHostFacts } from "../../src/vm/engine_probe.js";
import { syntheticBzImage } from "../boot/synthetic_bzimage.js";

/**
 * `vessel vm run` as a user runs it (the real CLI in a child process). The KVM path boots a
 * synthetic bzImage whose 64-bit entry is our own payload (payloads/hello_kernel.asm): real
 * boot/ loading (boot_params, page tables, GDT), real devices (COM1, debug-exit), the KVM engine
 * on this host's /dev/kvm, and the guest's exit status as Vessel's.
 */
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "../../..");
const bin = join(root, "bin/vessel.js");
const tmp = mkdtempSync(join(tmpdir(), "vessel-vmrun-"));

function vessel(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, "vm", "run", ...args], {
    encoding: "utf8",
    env: { ...process.env, ...env },
    timeout: 60000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A synthetic bzImage whose 64-bit entry (startup_64) is payloads/<name>.asm. */
function payloadKernel(name: string, bits: 32 | 64 = 64): string | undefined {
  const out = join(tmp, `${name}.bin`);
  const r = spawnSync("nasm", ["-f", "bin", "-o", out, join(root, `test/vm/payloads/${name}.asm`)]);
  if (r.status !== 0) return undefined;
  const code = readFileSync(out);
  const image = syntheticBzImage({
    payloadSize: Math.ceil((0x200 + code.length) / 4096) * 4096,
    ...(bits === 32 ? { xloadflags: 0 } : {}),
  });
  const setupSize = (image[0x1f1]! + 1) * 512;
  // 64-bit: startup_64 = protected-mode start + 0x200; 32-bit: code32_start = protected-mode start
  image.set(code, setupSize + (bits === 64 ? 0x200 : 0));
  const path = join(tmp, `${name}.bzImage`);
  writeFileSync(path, image);
  return path;
}
const helloKernel = () => payloadKernel("hello_kernel");

const kvmSkip = spawnSync("nasm", ["-v"]).status !== 0 ? "nasm is not installed" : undefined;
const noKvm = existsSync("/dev/kvm") ? undefined : "no /dev/kvm on this host";

for (const cpus of [1, 2]) {
  test(`vm run --engine kvm --cpus ${cpus} boots a bzImage and exits with the guest's status`, {
    skip: kvmSkip ?? noKvm,
  }, () => {
    const kernel = helloKernel()!;
    const r = vessel([
      "--engine",
      "kvm",
      "--kernel",
      kernel,
      "--mem",
      "64M",
      "--cpus",
      String(cpus),
      "--stats",
      "--",
      "true",
    ]);
    assert.equal(r.status, 7, r.stderr);
    assert.match(r.stdout, /hello from a bzImage: HdrS\n/);
    assert.match(r.stderr, /engine {8}kvm/);
    assert.match(r.stderr, /VM exits/);
    assert.match(r.stderr, /io {15}\d+/);
    assert.match(r.stderr, /to userspace {2}\d/);
  });
}

test("vm run --engine soft boots a 32-bit bzImage on the software CPU and exits with the guest's status", {
  skip: kvmSkip,
}, () => {
  const kernel = payloadKernel("hello_kernel32", 32)!;
  const r = vessel(["--engine", "soft", "--kernel", kernel, "--mem", "64M", "--stats", "--", "true"]);
  assert.equal(r.status, 7, r.stderr);
  assert.match(r.stdout, /hello from a bzImage: HdrS\n/);
  assert.match(r.stderr, /engine {8}soft/);
  assert.match(r.stderr, /instructions {2}\d+/);
});

/** What the probe says of this host, in-process: the CLI must print the same sentence. */
const thisHost = probeEngine(process.env.VESSEL_KVM_PATH ?? "/dev/kvm");

test("vm run without --engine probes the host, says which engine and why, and boots", {
  skip: kvmSkip,
}, () => {
  const kernel = payloadKernel("hello_kernel32", 32)!;
  if (thisHost.engine === "kvm") {
    // The 32-bit stand-in kernel is for the soft engine; on hardware KVM the 64-bit one boots.
    const r = vessel(["--kernel", helloKernel()!, "--mem", "64M", "--", "true"]);
    assert.equal(r.status, 7, r.stderr);
    assert.ok(r.stderr.includes(`vessel: ${thisHost.reason}`), r.stderr);
    return;
  }
  const r = vessel(["--kernel", kernel, "--mem", "64M", "--", "true"]);
  assert.equal(r.status, 7, r.stderr);
  assert.match(r.stdout, /hello from a bzImage: HdrS\n/);
  assert.ok(r.stderr.includes(`vessel: ${thisHost.reason}`), r.stderr);
});

test("vm run without --engine boots the default guest (a real Debian kernel) on the engine the probe picks", () => {
  const r = spawnSync(process.execPath, [bin, "vm", "run", "--", "uname", "-m"], {
    encoding: "utf8",
    timeout: 240000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stderr.includes(`vessel: ${thisHost.reason}`), r.stderr);
  // The soft engine runs the i386 guest, hardware KVM the amd64 one.
  assert.match(r.stdout, thisHost.engine === "kvm" ? /^x86_64$/m : /^i[3-6]86$/m);
});

test("vm run --rng / --disk put a virtio-mmio device in slot 0 where the guest finds it", {
  skip: kvmSkip ?? noKvm,
}, () => {
  const kernel = payloadKernel("virtio_probe_kernel")!;
  const none = vessel(["--engine", "kvm", "--kernel", kernel, "--mem", "64M", "--", "true"]);
  assert.equal(none.status, 0xff, none.stderr);
  const rng = vessel(["--engine", "kvm", "--kernel", kernel, "--mem", "64M", "--rng", "--", "true"]);
  assert.equal(rng.status, 4, rng.stderr);
  const image = join(tmp, "disk.img");
  writeFileSync(image, new Uint8Array(1 << 20));
  const blk = vessel([
    "--engine",
    "kvm",
    "--kernel",
    kernel,
    "--mem",
    "64M",
    "--disk",
    `${image},ro`,
    "--stats",
    "--",
    "true",
  ]);
  assert.equal(blk.status, 2, blk.stderr);
  assert.match(blk.stderr, /virtio/);
});

test("vm run rejects a bad --disk with the syntax", () => {
  const r = vessel(["--engine", "kvm", "--kernel", "/etc/hostname", "--disk", ",ro"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--disk needs an image path/);
});

test("vm run reports a guest that crashes (triple fault) with a register dump, and fails", {
  skip: kvmSkip ?? noKvm,
}, () => {
  const kernel = payloadKernel("crash_kernel")!;
  const r = vessel(["--engine", "kvm", "--kernel", kernel, "--mem", "64M"]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stdout, /crashing\n/);
  assert.match(r.stderr, /vessel: the guest shut down \(triple fault\)/);
  assert.match(r.stderr, /rip=/);
});

test("vm run --engine kvm without permission on /dev/kvm gives the group hint", (t) => {
  if (noKvm !== undefined) return t.skip(noKvm);
  if (process.getuid?.() !== 0) return t.skip("needs root to drop to an unprivileged user");
  if (spawnSync("setpriv", ["--version"]).status !== 0)
    return t.skip("setpriv (util-linux) is not installed");
  const r = spawnSync(
    "setpriv",
    [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      process.execPath,
      bin,
      "vm",
      "run",
      "--engine",
      "kvm",
      "--kernel",
      "/etc/hostname",
    ],
    { encoding: "utf8", timeout: 30000 },
  );
  if (/EACCES|permission denied/i.test(r.stderr) && !/kvm/.test(r.stderr))
    return t.skip("the repository is not readable by nobody");
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /no permission to open \/dev\/kvm: add your user to the "kvm" group/);
});

test("vm run --engine kvm on a file that is not a KVM device says so", () => {
  const r = vessel(["--engine", "kvm", "--kernel", "/etc/hostname"], { VESSEL_KVM_PATH: "/etc/hostname" });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /\/etc\/hostname is not a KVM device/);
  assert.match(r.stderr, /--engine soft/);
});

test("vm run --engine kvm without /dev/kvm says what to do", () => {
  const r = vessel(["--engine", "kvm", "--kernel", "/etc/hostname"], { VESSEL_KVM_PATH: "/nonexistent/kvm" });
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    /no \/nonexistent\/kvm: this host has no KVM; run with --engine soft, or enable virtualization/,
  );
});

// The loader's checks are the same on both engines; the soft engine runs them on any host.
test("vm run with a kernel that is not a bzImage says so", () => {
  const notKernel = join(tmp, "not-a-kernel");
  writeFileSync(notKernel, "just some text, not a kernel\n".repeat(100));
  const r = vessel(["--engine", "soft", "--kernel", notKernel]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /not-a-kernel/);
  assert.match(r.stderr, /bzImage/i);
});

test("vm run rejects unknown flags with the usage", () => {
  const r = vessel(["--bogus"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /bogus/);
  assert.match(r.stderr, /usage: vessel vm run/);
});

test("vm run rejects too small --mem with the minimum", () => {
  const r = vessel(["--engine", "kvm", "--kernel", "/etc/hostname", "--mem", "8M"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--mem 8M is too small: a Linux guest needs at least 32 MiB \(try --mem 256M\)/);
});

test("vm run rejects a bad --mem, --cpus and --engine", () => {
  assert.match(vessel(["--mem", "lots"]).stderr, /--mem "lots" is not a size/);
  assert.match(vessel(["--cpus", "0"]).stderr, /--cpus "0" must be a whole number/);
  const e = vessel(["--engine", "vmware"]);
  assert.equal(e.status, 2);
  assert.match(e.stderr, /--engine "vmware" is not an engine: use kvm or soft/);
});

test("vm run with a missing kernel file names it", () => {
  const r = vessel(["--engine", "kvm", "--kernel", "/nonexistent/bzImage"]);
  assert.equal(r.status, 2);
  assert.match(
    r.stderr,
    /kernel "\/nonexistent\/bzImage" does not exist: give an existing file with --kernel/,
  );
});

test("vm run --cpus 2 on the soft engine says it runs one CPU", () => {
  const r = vessel(["--engine", "soft", "--cpus", "2", "--kernel", "/etc/hostname"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /the soft engine runs one CPU/);
});

test("vm run with too little memory for the kernel and initrd says how much to give", {
  skip: kvmSkip,
}, () => {
  const kernel = payloadKernel("hello_kernel32", 32)!;
  const big = join(tmp, "big.initrd");
  writeFileSync(big, new Uint8Array(40 << 20));
  const r = vessel(["--engine", "soft", "--kernel", kernel, "--initrd", big, "--mem", "48M"]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /too small/);
  assert.match(r.stderr, /--mem/);
});

/** A host as the probe sees it; each test changes what differs. */
function host(facts: Partial<HostFacts>): HostFacts {
  return { kvmPath: "/dev/kvm", kvmExists: true, pvm: false, openError: undefined, ...facts };
}

test("the engine probe picks the soft engine on a host with no /dev/kvm, even with the PVM module loaded", () => {
  for (const pvm of [false, true]) {
    assert.deepEqual(chooseEngine(host({ kvmExists: false, pvm })), {
      engine: "soft",
      reason: "using the soft engine: this host has no /dev/kvm",
    });
  }
});

test("the engine probe picks the soft engine on PVM and says why", () => {
  assert.deepEqual(chooseEngine(host({ pvm: true })), {
    engine: "soft",
    reason:
      "using the soft engine: /dev/kvm is PVM, a nested software hypervisor that cannot boot stock kernels",
  });
});

test("the engine probe picks the KVM engine on hardware KVM", () => {
  assert.deepEqual(chooseEngine(host({})), { engine: "kvm", reason: "using the KVM engine (/dev/kvm)" });
});

test("the engine probe picks the soft engine when /dev/kvm cannot be opened, and passes on the reason", () => {
  const denied =
    'no permission to open /dev/kvm: add your user to the "kvm" group (sudo usermod -aG kvm $USER, then log in again), or run with --engine soft';
  assert.deepEqual(chooseEngine(host({ openError: denied })), {
    engine: "soft",
    reason: `using the soft engine: ${denied}`,
  });
});

test("the engine probe reads a host's facts from the device node and /sys/module", () => {
  const sys = join(tmp, "sys-module");
  mkdirSync(join(sys, "kvm_pvm"), { recursive: true });
  const fakeKvm = join(tmp, "kvm");
  writeFileSync(fakeKvm, "");
  assert.deepEqual(readHostFacts(fakeKvm, sys), {
    kvmPath: fakeKvm,
    kvmExists: true,
    pvm: true,
    openError: undefined,
  });
  const notKvm = readHostFacts(fakeKvm, join(tmp, "no-modules"));
  assert.equal(notKvm.pvm, false);
  assert.match(notKvm.openError ?? "", /is not a KVM device/);
  assert.deepEqual(readHostFacts("/nonexistent/kvm", sys), {
    kvmPath: "/nonexistent/kvm",
    kvmExists: false,
    pvm: true,
    openError: undefined,
  });
});

const python = spawnSync("python3", ["-c", "import pty"]).status === 0;

/**
 * Runs `vessel vm run ...` on a pseudo-terminal (python3's pty module: Node has none), types
 * `keys` once `waitFor` has appeared, and returns everything the terminal showed and the status.
 */
function onTerminal(args: string[], waitFor: string, keys: string[]): { status: number; output: string } {
  const script = `
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.executable if False else ${JSON.stringify(process.execPath)}, [${JSON.stringify(process.execPath)}, ${JSON.stringify(bin)}, "vm", "run", *sys.argv[1:]])
out = b""
keys = [k.encode("latin1") for k in ${JSON.stringify(keys)}]
deadline = time.time() + 50
sent = False
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    if not sent and ${JSON.stringify(waitFor)}.encode() in out:
        sent = True
        for k in keys:
            os.write(fd, k)
            time.sleep(0.3)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("latin1"))
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 99)
`;
  const r = spawnSync("python3", ["-c", script, ...args], { encoding: "latin1", timeout: 60000 });
  return { status: r.status ?? -1, output: r.stdout + r.stderr };
}

test("vm run console on a terminal: typed bytes reach the guest's UART interrupt handler, Ctrl-A x leaves", {
  skip: kvmSkip ?? noKvm ?? (python ? undefined : "python3 (for a pty) is not installed"),
}, () => {
  const kernel = payloadKernel("echo_kernel")!;
  const r = onTerminal(["--engine", "kvm", "--kernel", kernel, "--mem", "64M"], "echo ready", [
    "hi!",
    "\x01x",
  ]);
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /echo ready/);
  assert.match(r.output, /hi!/);
});

test("vm run console on a terminal: the guest's exit status ends the run (q makes the stand-in kernel exit 3)", {
  skip: kvmSkip ?? noKvm ?? (python ? undefined : "python3 (for a pty) is not installed"),
}, () => {
  const kernel = payloadKernel("echo_kernel")!;
  const r = onTerminal(["--engine", "kvm", "--kernel", kernel, "--mem", "64M", "--", "sh"], "echo ready", [
    "q",
  ]);
  assert.equal(r.status, 3, r.output);
});
