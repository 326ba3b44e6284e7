/**
 * Paravirtual I/O end to end: `vessel vm run --engine soft` boots the default i386 guest (Debian's
 * 686 kernel + busybox) with virtio-blk disks, virtio-rng and virtio-vsock, and one guest command
 * checks them all in one boot (a boot costs a minute on the soft engine):
 *
 *   - the clocksource is kvm-clock (the soft engine's KVM paravirtual CPU interface);
 *   - 16 bytes arrive from /dev/hwrng (virtio-rng);
 *   - a line written to /dev/hvc0 reaches Vessel's console output (virtio-console);
 *   - a vsock echo: a guest program (test/vm/guest_tools/vsock_echo.c, built here with gcc -m32,
 *     handed to the guest as a raw read-only disk) connects to the host's CID 2, and this test
 *     answers on the Unix socket `<uds>_<port>` (Firecracker's convention);
 *   - the guest mounts an ext4 disk, writes a file and syncs; Vessel is then killed with SIGKILL
 *     and the host reads the file back from the image with debugfs.
 *
 * Skips (with the reason) when the i386 guest is not built, or gcc cannot build 32-bit code, or
 * e2fsprogs is missing.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { guestPaths } from "../../src/guest/default_guest.js";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const VESSEL = join(ROOT, "bin/vessel.js");
const TOOL_SOURCE = join(ROOT, "test/vm/guest_tools/vsock_echo.c");
const VSOCK_PORT = 5000;
const FILE_TEXT = "kept across SIGKILL by virtio-blk FLUSH";

function have(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Builds the guest's vsock client; undefined when this host's gcc cannot make i386 code. */
function buildTool(dir: string): string | undefined {
  const out = join(dir, "vsock_echo");
  try {
    execFileSync(
      "gcc",
      [
        "-m32",
        "-static",
        "-nostdlib",
        "-ffreestanding",
        "-fno-pic",
        "-fno-stack-protector",
        "-O2",
        "-o",
        out,
        TOOL_SOURCE,
      ],
      { stdio: "pipe" },
    );
    // A disk is whole sectors: pad the image (the ELF loader ignores what follows its segments).
    truncateSync(out, Math.ceil(statSync(out).size / 4096) * 4096);
    return out;
  } catch {
    return undefined;
  }
}

/** The guest's script: each check prints one KEY=value line; the disk check comes last. */
function guestScript(toolBytes: number): string {
  const sectors = Math.ceil(toolBytes / 512);
  return [
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion
    'disk() { for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = $1 ] && echo ${b##*/}; done; }',
    "echo CLOCK=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)",
    "echo RNG=$(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \\n')",
    "echo HVC=through-virtio-console > /dev/hvc0",
    `dd if=/dev/$(disk tools) of=/tmp/ve bs=512 count=${sectors} 2>/dev/null; chmod +x /tmp/ve`,
    `out=$(/tmp/ve ${VSOCK_PORT} ping-from-guest); echo "VSOCK=$out rc=$?"`,
    `mkdir -p /mnt && mount -t ext4 /dev/$(disk data) /mnt && echo '${FILE_TEXT}' > /mnt/kept.txt && sync && echo WROTE=yes`,
    "sleep 600",
  ].join("\n");
}

test("virtio on the soft engine: kvm-clock, rng bytes, hvc0 output, a vsock echo, and a file that survives SIGKILL", {
  timeout: 600_000,
}, async (t) => {
  const guest = guestPaths("i386");
  if (!existsSync(guest.kernel) || !existsSync(guest.initrd)) {
    t.skip("the default i386 guest is not built (node bin/vessel.js guest build --arch i386)");
    return;
  }
  if (!have("mkfs.ext4", ["-V"]) || !have("debugfs", ["-V"])) {
    t.skip("e2fsprogs (mkfs.ext4, debugfs) is not installed");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "vessel-virtio-"));
  let child: ChildProcess | undefined;
  let server: Server | undefined;
  try {
    const tool = buildTool(dir);
    if (tool === undefined) {
      t.skip("gcc cannot build 32-bit code here (gcc -m32 -nostdlib failed)");
      return;
    }
    const data = join(dir, "data.ext4");
    execFileSync("mkfs.ext4", ["-q", "-F", data, "16M"], { stdio: "pipe" });
    const uds = join(dir, "vsock.sock");
    // The host side of the guest's connection to CID 2 port VSOCK_PORT.
    server = createServer((sock) => {
      const chunks: Buffer[] = [];
      sock.on("data", (b) => chunks.push(b));
      sock.on("end", () => sock.end(`echo:${Buffer.concat(chunks).toString()}`));
    });
    await new Promise<void>((resolve) => server?.listen(`${uds}_${VSOCK_PORT}`, resolve));

    const script = guestScript(statSync(tool).size);
    child = spawn(
      process.execPath,
      [
        VESSEL,
        "vm",
        "run",
        "--engine",
        "soft",
        "--disk",
        `${tool},ro,serial=tools`,
        "--disk",
        `${data},serial=data`,
        "--rng",
        "--virtio-console",
        "--vsock",
        `cid=3,uds=${uds}`,
        "--",
        "sh",
        "-c",
        script,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stderr?.on("data", (b: Buffer) => {
      out += b.toString();
    });
    const exited = new Promise<number | null>((resolve) => child?.on("exit", (code) => resolve(code)));
    const wrote = await new Promise<boolean>((resolve) => {
      child?.stdout?.on("data", (b: Buffer) => {
        out += b.toString();
        if (/WROTE=yes/.test(out)) resolve(true);
      });
      void exited.then(() => resolve(false));
    });
    if (wrote) child.kill("SIGKILL");
    await exited;
    const line = (key: string) => new RegExp(`^${key}=(.*)$`, "m").exec(out)?.[1]?.trim();
    assert.equal(line("CLOCK"), "kvm-clock", out.slice(-3000));
    assert.match(line("RNG") ?? "", /^[0-9a-f]{32}$/, out.slice(-3000));
    assert.equal(line("HVC"), "through-virtio-console", out.slice(-3000));
    assert.equal(line("VSOCK"), "echo:ping-from-guest rc=0", out.slice(-3000));
    assert.ok(wrote, `the guest did not finish writing:\n${out.slice(-3000)}`);
    // Vessel died by SIGKILL; what the guest flushed is in the image.
    const kept = execFileSync("debugfs", ["-R", "cat /kept.txt", data], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    assert.equal(kept.toString().trim(), FILE_TEXT);
    assert.ok(readFileSync(data).length > 0);
  } finally {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
