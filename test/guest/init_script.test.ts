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
