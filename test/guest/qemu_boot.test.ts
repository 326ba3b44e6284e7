import assert from "node:assert/strict";
import { test } from "node:test";
import { cachedGuest, type GuestArch } from "../../src/guest/default_guest.js";
import { guestCommandParam, USERSPACE_MARKER_TEXT } from "../../src/guest/init_script.js";
import { DEBUG_EXIT_PORT } from "../../src/memory/layout.js";
import { qemuMissing, runQemu } from "../boot/qemu.js";

/**
 * The default guest booted by QEMU TCG, the reference for Vessel's software engine: proves the
 * kernel, the initramfs and its /init before Vessel's own engines run them. QEMU's isa-debug-exit
 * stands in for Vessel's debug-exit port: a write of v to it ends QEMU with status (v << 1) | 1.
 */

const QEMU: Record<GuestArch, string> = { i386: "qemu-system-i386", amd64: "qemu-system-x86_64" };

for (const arch of ["i386", "amd64"] as const) {
  const qemuArgs = (append: string, debugExitPort: number): string[] => {
    const g = cachedGuest(arch)!;
    return [
      QEMU[arch],
      "-M",
      "pc",
      "-accel",
      "tcg",
      "-m",
      "256",
      "-nographic",
      "-no-reboot",
      "-nodefaults",
      "-serial",
      "stdio",
      "-kernel",
      g.kernel,
      "-initrd",
      g.initrd,
      "-append",
      `${g.cmdline} ${append}`,
      "-device",
      `isa-debug-exit,iobase=0x${debugExitPort.toString(16)},iosize=1`,
    ];
  };
  const missing = (): string | undefined => {
    const noQemu = qemuMissing(QEMU[arch]);
    if (noQemu !== undefined) return noQemu;
    if (cachedGuest(arch) === undefined)
      return `no ${arch} default guest cached: run \`node bin/vessel.js guest build --arch ${arch}\``;
    return undefined;
  };

  test(`QEMU TCG boots the ${arch} default guest, runs a command from vessel.cmd and reports its exit status`, async (t) => {
    const why = missing();
    if (why !== undefined) {
      t.skip(why);
      return;
    }
    const cmd = guestCommandParam(["sh", "-c", "uname -m; echo hello from $(hostname); exit 7"]);
    // debug-exit at +1 only: the marker write (+0) goes nowhere, the status write ends QEMU.
    const r = await runQemu(qemuArgs(cmd, DEBUG_EXIT_PORT + 1), 180_000);
    t.diagnostic(`${arch}: boot + command under QEMU TCG took ${r.ms} ms`);
    assert.ok(r.output.includes(USERSPACE_MARKER_TEXT), r.output.slice(-3000));
    assert.match(r.output, arch === "i386" ? /\bi686\b/ : /\bx86_64\b/);
    assert.match(r.output, /hello from vessel/);
    assert.equal(r.status, (7 << 1) | 1, r.output.slice(-3000));
  });

  test(`the ${arch} default guest writes the userspace marker to DEBUG_EXIT_PORT`, async (t) => {
    const why = missing();
    if (why !== undefined) {
      t.skip(why);
      return;
    }
    const r = await runQemu(qemuArgs("", DEBUG_EXIT_PORT), 180_000);
    t.diagnostic(`${arch}: boot to the userspace marker under QEMU TCG took ${r.ms} ms`);
    // The marker write (value 0) ends QEMU with status 1 before the text line is printed.
    assert.equal(r.status, 1, r.output.slice(-3000));
    assert.match(r.output, /Run \/init as init process/);
  });
}
