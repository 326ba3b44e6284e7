import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  BINFMT_DIR,
  type BinfmtEntry,
  binfmtState,
  entryMatches,
  I386_ELF_MAGIC,
  I386_ELF_MASK,
  listBinfmtEntries,
  parseBinfmtEntry,
  registerBinfmt,
  registrationLine,
  removeBinfmt,
} from "../../src/guest/binfmt_misc.js";
import {
  chooseI386Exec,
  findProgram,
  HOST_I386_ENV,
  type HostI386Facts,
  hostI386Facts,
  i386ProbeElf,
  PROBE_EXIT_STATUS,
  parseHostI386Override,
  planChrootExec,
  probeI386,
  QEMU_I386,
  removeStaleEntries,
  runInChroot,
  VESSEL_ENTRY_PREFIX,
} from "../../src/guest/foreign_exec.js";
import { cacheRoot, guestPaths } from "../../src/guest/default_guest.js";
import { GuestError } from "../../src/guest/guest_error.js";

/** Debian's qemu-user-static entry for aarch64 as /proc/sys/fs/binfmt_misc/qemu-aarch64 shows it. */
const AARCH64_ENTRY = `enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POCF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
`;

/** A host entry taking i386 ELFs (QEMU's magic and mask), with the given flags. */
function i386Entry(name: string, flags: string): BinfmtEntry {
  return parseBinfmtEntry(
    name,
    `enabled\ninterpreter /usr/bin/qemu-i386\nflags: ${flags}\noffset 0\nmagic ${I386_ELF_MAGIC.toString("hex")}\nmask ${I386_ELF_MASK.toString("hex")}\n`,
  );
}

const ran = { ran: true, detail: "a 96-byte i386 ELF ran (exit status 42)" };
const refused = {
  ran: false,
  detail: 'a 96-byte i386 ELF did not run (not found: the kernel refused it, "Exec format error")',
};
const facts = (f: Partial<HostI386Facts>): HostI386Facts => ({
  override: undefined,
  probe: ran,
  interceptors: [],
  qemu: "/usr/bin/qemu-i386-static",
  ...f,
});

test("the probe ELF is a 96-byte static i386 executable: ELFCLASS32, EM_386, entry after the headers, QEMU's i386 magic matches it", () => {
  const elf = i386ProbeElf();
  assert.equal(elf.length, 96);
  assert.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
  assert.equal(elf[4], 1); // ELFCLASS32
  assert.equal(elf.readUInt16LE(18), 3); // EM_386
  assert.equal(elf.readUInt32LE(24), 0x08048000 + 84); // e_entry: the code after ELF + program header
  assert.equal(elf.readUInt32LE(52), 1); // PT_LOAD
  assert.deepEqual([...elf.subarray(84)], [0xb8, 1, 0, 0, 0, 0xbb, PROBE_EXIT_STATUS, 0, 0, 0, 0xcd, 0x80]);
  const qemu = i386Entry("qemu-i386", "F");
  assert.ok(entryMatches(qemu, elf));
  // The x86-64 node binary is not taken by the i386 entry.
  const head = Buffer.alloc(64);
  const fd = openSync(process.execPath, "r");
  readSync(fd, head, 0, 64, 0);
  assert.ok(!entryMatches(qemu, head));
  assert.ok(!entryMatches(parseBinfmtEntry("qemu-aarch64", AARCH64_ENTRY), elf));
});

test("QEMU's user-mode emulator runs the probe ELF to exit status 42 (the ELF is right whatever this host's kernel does)", (t) => {
  const qemu = findProgram(QEMU_I386);
  if (qemu === undefined) {
    t.skip(`${QEMU_I386} not installed (apt-get install qemu-user-static)`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "vessel-probe-"));
  try {
    writeFileSync(join(dir, "probe"), i386ProbeElf());
    chmodSync(join(dir, "probe"), 0o755); // QEMU, like execve, runs only an executable file
    const r = spawnSync(qemu, [join(dir, "probe")]);
    assert.equal(r.status, PROBE_EXIT_STATUS, String(r.stderr));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("probing this host runs the ELF and counts only exit status 42 as i386 code running", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-probe-"));
  try {
    const p = probeI386(dir);
    t.diagnostic(`this host: ${p.detail}`);
    if (p.ran) assert.match(p.detail, /exit status 42/);
    else assert.match(p.detail, /did not run .*Exec format error/);
    assert.ok(!existsSync(join(dir, "i386-probe.elf")), "the probe file is removed");
    // A file the kernel refuses (a truncated ELF): execvp hands it to /bin/sh, which must not count.
    writeFileSync(join(dir, "junk"), i386ProbeElf().subarray(0, 30));
    chmodSync(join(dir, "junk"), 0o755);
    assert.notEqual(spawnSync(join(dir, "junk")).status, PROBE_EXIT_STATUS);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the choice: native when the probe runs, QEMU when VESSEL_HOST_I386=0 or the kernel refuses, and what to install when neither", () => {
  const native = chooseI386Exec(facts({}));
  assert.equal(native.kind, "native");
  assert.match(native.why, /natively: a 96-byte i386 ELF ran/);

  const forced = chooseI386Exec(facts({ override: "0", probe: undefined }));
  assert.deepEqual(forced.kind, "qemu");
  assert.match(forced.why, /VESSEL_HOST_I386=0 says this host cannot run i386 code/);
  assert.match(forced.why, /QEMU user-mode emulation \(\/usr\/bin\/qemu-i386-static\) through binfmt_misc/);

  const noIa32 = chooseI386Exec(facts({ probe: refused }));
  assert.equal(noIa32.kind, "qemu");
  assert.match(noIa32.why, /cannot execute i386 code: a 96-byte i386 ELF did not run/);

  const nothing = chooseI386Exec(facts({ probe: refused, qemu: undefined }));
  assert.equal(nothing.kind, "unavailable");
  assert.match(nothing.why, /qemu-i386-static is not installed/);
  assert.match(nothing.why, /apt-get install qemu-user-static/);
  assert.match(nothing.why, /CONFIG_IA32_EMULATION/);

  assert.equal(chooseI386Exec(facts({ override: "1", probe: undefined, qemu: undefined })).kind, "native");
});

test("the choice with the host's own i386 binfmt_misc entry: used with flag F, bypassed without it (not found in a chroot)", () => {
  const withF = chooseI386Exec(facts({ interceptors: [i386Entry("qemu-i386", "OCF")] }));
  assert.equal(withF.kind, "native");
  assert.match(withF.why, /through its binfmt_misc entry "qemu-i386" .*flag F/);
  const withoutF = chooseI386Exec(facts({ interceptors: [i386Entry("qemu-i386", "P")] }));
  assert.equal(withoutF.kind, "qemu");
  assert.match(withoutF.why, /entry "qemu-i386" takes i386 ELFs to \/usr\/bin\/qemu-i386 without flag F/);
});

test("VESSEL_HOST_I386 is 0, 1 or unset; anything else is refused with what to give", () => {
  assert.equal(parseHostI386Override(undefined), undefined);
  assert.equal(parseHostI386Override(""), undefined);
  assert.equal(parseHostI386Override("0"), false);
  assert.equal(parseHostI386Override("1"), true);
  assert.throws(
    () => parseHostI386Override("no"),
    (e: unknown) =>
      e instanceof GuestError && e.code === "GUEST_BAD_OVERRIDE" && /give 0 .* or 1/.test(e.message),
  );
});

test("an amd64 tree runs natively on this x86-64 host without probing", () => {
  const p = planChrootExec("amd64", "/nonexistent");
  assert.equal(p.kind, process.arch === "x64" ? "native" : "unavailable");
});

test("binfmt_misc entries are read from their /proc text and registration lines are written in the kernel's format", () => {
  const e = parseBinfmtEntry("qemu-aarch64", AARCH64_ENTRY);
  assert.equal(e.enabled, true);
  assert.equal(e.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
  assert.equal(e.flags, "POCF");
  assert.equal(e.offset, 0);
  assert.equal(e.magic?.toString("hex"), "7f454c460201010000000000000000000200b700");
  assert.equal(parseBinfmtEntry("x", "disabled\ninterpreter /x\nflags: \nextension .jar\n").magic, undefined);
  assert.equal(
    registrationLine("vessel-i386-1", I386_ELF_MAGIC, I386_ELF_MASK, "/c/qemu-i386-binfmt-P", "PF"),
    ":vessel-i386-1:M::\\x7f\\x45\\x4c\\x46\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x03\\x00:" +
      "\\xff\\xff\\xff\\xff\\xff\\xfe\\xfe\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/c/qemu-i386-binfmt-P:PF",
  );
  assert.throws(() => registrationLine("a/b", I386_ELF_MAGIC, I386_ELF_MASK, "/x", "F"), /entry name "a\/b"/);
  assert.throws(() => registrationLine("a", I386_ELF_MAGIC, I386_ELF_MASK, "/x:y", "F"), /without ':'/);
});

test("the kernel takes a Vessel entry with flag F: files run through an interpreter whose path is gone, until the entry is removed", (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("registering in binfmt_misc needs root");
    return;
  }
  if (binfmtState() !== "enabled") {
    t.skip(`binfmt_misc is not mounted and enabled at ${BINFMT_DIR}`);
    return;
  }
  // A magic no other program has (not an ELF: nothing else on this shared host is affected).
  const magic = Buffer.from(`#VSLT${process.pid}#`);
  const name = `vessel-test-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), "vessel-binfmt-"));
  try {
    const interpreter = join(dir, "interp");
    // echo prints its argument (the file's path); without the entry execvp hands the file to sh,
    // which reads the first line as a comment and exits 7.
    symlinkSync("/bin/echo", interpreter);
    const file = join(dir, "prog");
    writeFileSync(file, `${magic.toString()}\nexit 7\n`);
    chmodSync(file, 0o755);
    assert.equal(spawnSync(file).status, 7);
    registerBinfmt(registrationLine(name, magic, Buffer.alloc(magic.length, 0xff), interpreter, "F"));
    const entry = listBinfmtEntries().find((e) => e.name === name);
    assert.ok(entry?.enabled && entry.flags === "F", JSON.stringify(entry));
    rmSync(interpreter); // flag F opened it at registration: the path is no longer needed
    const through = spawnSync(file, { encoding: "utf8" });
    assert.equal(through.status, 0);
    assert.equal(through.stdout.trim(), file);
    removeBinfmt(name);
    assert.ok(!existsSync(join(BINFMT_DIR, name)));
    assert.equal(spawnSync(file).status, 7);
  } finally {
    removeBinfmt(name);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A chroot of Debian's i386 busybox-static (from the default i386 guest's cache), or a skip reason. */
function busyboxTree(): { tree: string } | { skip: string } {
  const debs = join(guestPaths("i386").dir, "debs");
  const deb = existsSync(debs) ? readdirSync(debs).find((f) => f.startsWith("busybox-static_")) : undefined;
  if (deb === undefined)
    return {
      skip: "no i386 busybox-static package cached: run `node bin/vessel.js guest build --arch i386`",
    };
  const tree = mkdtempSync(join(cacheRoot(), "test-i386-tree-"));
  const x = spawnSync("dpkg-deb", ["-x", join(debs, deb), tree], { encoding: "utf8" });
  assert.equal(x.status, 0, x.stderr);
  mkdirSync(join(tree, "usr/bin"), { recursive: true });
  symlinkSync("/bin/busybox", join(tree, "usr/bin/uname")); // what runInChroot checks with
  symlinkSync("busybox", join(tree, "bin/sh"));
  return { tree };
}

test("with VESSEL_HOST_I386=0 a chroot's i386 programs run under qemu-i386 in a private binfmt_misc instance, with argv[0] kept, and the host's binfmt_misc is untouched", async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("chroot and user namespaces with an identity map need root");
    return;
  }
  if (findProgram(QEMU_I386) === undefined) {
    t.skip(`${QEMU_I386} not installed (apt-get install qemu-user-static)`);
    return;
  }
  const made = busyboxTree();
  if ("skip" in made) {
    t.skip(made.skip);
    return;
  }
  const before = listBinfmtEntries().map((e) => e.name);
  try {
    const plan = chooseI386Exec(hostI386Facts(made.tree, { [HOST_I386_ENV]: "0" }));
    assert.equal(plan.kind, "qemu");
    const lines: string[] = [];
    // `exec -a uname busybox`: only with argv[0] passed through (flag P) is busybox its uname applet.
    const r = await runInChroot(plan, made.tree, ["/bin/sh", "-c", "exec -a uname /bin/busybox -m"], {
      arch: "i386",
      progress: (l) => lines.push(l),
      prefix: "",
      workDir: made.tree,
    });
    assert.equal(r.status, 0, lines.join("\n"));
    assert.equal(r.method, "qemu-binfmt-private");
    assert.equal(r.machine, "i686");
    assert.deepEqual(r.tail, ["i686"]);
    assert.match(
      lines.join("\n"),
      /checked: uname -m in the chroot says i686 \(QEMU's entry is in a private binfmt_misc instance/,
    );
    assert.deepEqual(
      listBinfmtEntries().map((e) => e.name),
      before,
    );
    assert.ok(!existsSync(join(made.tree, "binfmt")), "the scratch directory is removed");
  } finally {
    rmSync(made.tree, { recursive: true, force: true });
  }
});

test("Vessel's host entries left by a build that died are removed; a running build's entry is kept", (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("registering in binfmt_misc needs root");
    return;
  }
  if (binfmtState() !== "enabled") {
    t.skip(`binfmt_misc is not mounted and enabled at ${BINFMT_DIR}`);
    return;
  }
  // A pid above the kernel's pid_max (4194304 at most) belongs to no process.
  const dead = `${VESSEL_ENTRY_PREFIX}${4194305 + (process.pid % 1000)}`;
  const live = `${VESSEL_ENTRY_PREFIX}${process.pid}`;
  try {
    for (const name of [dead, live]) {
      // Magics no file has (not ELF: nothing else on this shared host is affected).
      const magic = Buffer.from(`#${name}#`);
      registerBinfmt(registrationLine(name, magic, Buffer.alloc(magic.length, 0xff), "/bin/true", ""));
    }
    removeStaleEntries(listBinfmtEntries());
    const names = listBinfmtEntries().map((e) => e.name);
    assert.ok(!names.includes(dead), names.join(" "));
    assert.ok(names.includes(live), names.join(" "));
  } finally {
    removeBinfmt(dead);
    removeBinfmt(live);
  }
});
