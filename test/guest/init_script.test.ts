import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import {
  decodeGuestCommand,
  guestCommandParam,
  initScript,
  shellQuote,
} from "../../src/guest/init_script.js";

test("a guest command travels on the kernel command line as vessel.cmd=<base64> and decodes back", () => {
  const argv = ["sh", "-c", "echo 'it''s' \"$HOME\" && exit 3", "x y"];
  const param = guestCommandParam(argv);
  assert.match(param, /^vessel\.cmd=[A-Za-z0-9+/]+=*$/);
  const cmdline = `console=ttyS0 panic=-1 ${param} quiet`;
  const decoded = decodeGuestCommand(cmdline)!;
  // the decoded shell command, run by a POSIX shell, sees exactly the original argv
  const r = spawnSync("sh", ["-c", `set -- ${decoded.slice(0)}; printf '%s\\n' "$@"`], { encoding: "utf8" });
  assert.equal(r.stdout, `${argv.join("\n")}\n`);
  assert.equal(decodeGuestCommand("console=ttyS0"), undefined);
});

test("shellQuote leaves plain words alone and single-quotes the rest", () => {
  assert.equal(shellQuote("uname"), "uname");
  assert.equal(shellQuote("-a"), "-a");
  assert.equal(shellQuote("a b"), "'a b'");
  assert.equal(shellQuote("it's"), "'it'\\''s'");
  assert.equal(shellQuote(""), "''");
});

test("the init script is valid sh and writes the marker and exit status to the debug-exit ports", () => {
  const text = initScript("6.1.0-50-686");
  const r = spawnSync("sh", ["-n"], { input: text, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(text, /outb 244 0/);
  assert.match(text, /outb 245 "\$rc"/);
  assert.match(text, /insmod "\/lib\/modules\/6\.1\.0-50-686\/\$m"/);
  assert.match(text, /setsid cttyhack sh/);
  assert.match(text, /poweroff -f/);
});

test("the init's outb writes one byte with the value at the port offset", () => {
  // Run the script's outb function against a regular file standing in for /dev/port.
  const text = initScript("x");
  const fn = /outb\(\) \{\n[^}]*\}/.exec(text)![0].replace("/dev/port", "$OUT");
  const r = spawnSync(
    "sh",
    ["-c", `OUT=$(mktemp); ${fn}\n outb 5 0; outb 6 200; outb 7 7; od -An -tu1 -j5 -N3 "$OUT"; rm -f "$OUT"`],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split(/\s+/).map(Number), [0, 200, 7]);
});

/** Runs the init's command-line loop over `cmdline` (standing in for /proc/cmdline) and prints the variables. */
function parseWithInit(cmdline: string): Record<string, string> {
  const text = initScript("x");
  const loop = /cmd= root=[^\n]*\nfor word in[\s\S]*?\ndone\n/.exec(text)![0];
  const r = spawnSync(
    "sh",
    [
      "-c",
      `F=$(mktemp); printf '%s\\n' "$1" > "$F"; ${loop.replace("/proc/cmdline", '"$F"')}
rm -f "$F"; printf '%s\\n' "cmd=$cmd" "root=$root" "rootfstype=$rootfstype" "rootflags=$rootflags" "rootmode=$rootmode" "rootinit=$rootinit" "rootwait=$rootwait"`,
      "sh",
      cmdline,
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  return Object.fromEntries(
    r.stdout
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

test("without root= the init stays in the initramfs: defaults are ext4, rw, /sbin/init, 30 s", () => {
  assert.deepEqual(parseWithInit("console=ttyS0 panic=-1 vessel.cmd=ZWNobw=="), {
    cmd: "ZWNobw==",
    root: "",
    rootfstype: "ext4",
    rootflags: "",
    rootmode: "rw",
    rootinit: "/sbin/init",
    rootwait: "30",
  });
});

test("root=, vessel.root=, rootfstype=, rootflags=, ro, init= and vessel.rootwait= are read from the command line", () => {
  const a = parseWithInit(
    "console=ttyS0 root=/dev/vda ro rootfstype=ext2 rootflags=noatime init=/bin/bash vessel.rootwait=5",
  );
  assert.equal(a.root, "/dev/vda");
  assert.equal(a.rootmode, "ro");
  assert.equal(a.rootfstype, "ext2");
  assert.equal(a.rootflags, ",noatime");
  assert.equal(a.rootinit, "/bin/bash");
  assert.equal(a.rootwait, "5");
  assert.equal(parseWithInit("vessel.root=LABEL=vessel-root").root, "LABEL=vessel-root");
  assert.equal(parseWithInit("root=UUID=0a1b-2c rw").root, "UUID=0a1b-2c");
});

test("with a root the init mounts it, moves /dev /proc /sys and switch_roots; a root without vessel-init runs the command in a chroot", () => {
  const text = initScript("6.1.0-50-686");
  assert.match(text, /mount -t "\$rootfstype" -o "\$rootmode\$rootflags" "\$dev" \/newroot/);
  assert.match(text, /mount --move "\/\$d" "\/newroot\/\$d"/);
  assert.match(text, /exec switch_root \/newroot "\$rootinit"/);
  assert.match(text, /\[ ! -x "\/newroot\/sbin\/vessel-init" \]/);
  assert.match(text, /setsid cttyhack chroot \/newroot \/bin\/sh -c "\$script"/);
  // the wait for the device is bounded
  assert.match(text, /if \[ "\$n" -ge "\$rootwait" \]; then/);
  // the marker is written before any of it, as without a root
  assert.ok(text.indexOf("outb 244 0") < text.indexOf("mount_root() {"));
});
