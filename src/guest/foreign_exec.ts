import { spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  chmodSync,
  mkdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import {
  BINFMT_DIR,
  type BinfmtEntry,
  binfmtState,
  entryMatches,
  I386_ELF_MAGIC,
  I386_ELF_MASK,
  listBinfmtEntries,
  mountBinfmt,
  registerBinfmt,
  registrationLine,
  removeBinfmt,
} from "./binfmt_misc.js";
import type { GuestArch, Progress } from "./default_guest.js";
import { GuestError } from "./guest_error.js";
import { runStreaming, type StreamingResult } from "./run_streaming.js";

/**
 * Running a guest architecture's programs in a chroot on this host (debootstrap's second stage runs
 * the new tree's own dpkg and maintainer scripts there). amd64 is the host's own code. i386 runs
 * natively where the kernel has IA-32 emulation, and elsewhere (the x86-64 hosts without
 * CONFIG_IA32_EMULATION, or booted with ia32_emulation=0, where an i386 ELF gets "Exec format
 * error") under QEMU's user-mode emulator, qemu-i386-static from Debian's qemu-user-static,
 * through binfmt_misc with flag F so that it works inside the chroot without being copied there.
 *
 * Which one is used is decided by doing, not by reading the kernel's configuration: a 96-byte i386
 * ELF is executed (chooseI386Exec), then a program of the tree itself is run in the chroot before
 * the real work (runInChroot). VESSEL_HOST_I386=0 makes the probe answer "cannot run i386", so that
 * the QEMU path is exercised on a host that can; VESSEL_HOST_I386=1 skips the probe.
 */

export const HOST_I386_ENV = "VESSEL_HOST_I386";

/** The Debian package that provides qemu-i386-static, and the program's name. */
export const QEMU_I386 = "qemu-i386-static";
export const QEMU_PACKAGE = "qemu-user-static";

/** The name of the entry Vessel registers in the host's binfmt_misc (with its pid: builds may overlap). */
export const VESSEL_ENTRY_PREFIX = "vessel-i386-";

/** The status the probe ELF exits with. */
export const PROBE_EXIT_STATUS = 42;

/**
 * A complete static i386 ELF executable that calls exit(42) (System V i386 ABI; ELF header and
 * program header layouts from the ELF specification, Figures 1-3 and 2-1): one PT_LOAD segment
 * that maps the file itself at 0x08048000, entry right after the headers.
 */
export function i386ProbeElf(): Buffer {
  // biome-ignore format: one instruction per line, its assembly beside it
  const code = Buffer.from([
    0xb8, 0x01, 0x00, 0x00, 0x00,              // mov $1, %eax   (__NR_exit on i386)
    0xbb, PROBE_EXIT_STATUS, 0x00, 0x00, 0x00, // mov $42, %ebx  (the status)
    0xcd, 0x80,                                // int $0x80      (the i386 system call gate)
  ]);
  const EHSIZE = 52;
  const PHSIZE = 32;
  const base = 0x08048000;
  const elf = Buffer.alloc(EHSIZE + PHSIZE + code.length);
  // e_ident: magic, ELFCLASS32, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, padding.
  elf.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1, 0], 0);
  elf.writeUInt16LE(2, 16); // e_type ET_EXEC
  elf.writeUInt16LE(3, 18); // e_machine EM_386
  elf.writeUInt32LE(1, 20); // e_version
  elf.writeUInt32LE(base + EHSIZE + PHSIZE, 24); // e_entry
  elf.writeUInt32LE(EHSIZE, 28); // e_phoff
  elf.writeUInt32LE(0, 32); // e_shoff: no sections
  elf.writeUInt32LE(0, 36); // e_flags
  elf.writeUInt16LE(EHSIZE, 40); // e_ehsize
  elf.writeUInt16LE(PHSIZE, 42); // e_phentsize
  elf.writeUInt16LE(1, 44); // e_phnum
  // e_shentsize, e_shnum, e_shstrndx: 0
  const ph = EHSIZE;
  elf.writeUInt32LE(1, ph); // p_type PT_LOAD
  elf.writeUInt32LE(0, ph + 4); // p_offset
  elf.writeUInt32LE(base, ph + 8); // p_vaddr
  elf.writeUInt32LE(base, ph + 12); // p_paddr
  elf.writeUInt32LE(elf.length, ph + 16); // p_filesz
  elf.writeUInt32LE(elf.length, ph + 20); // p_memsz
  elf.writeUInt32LE(5, ph + 24); // p_flags PF_R | PF_X
  elf.writeUInt32LE(0x1000, ph + 28); // p_align
  code.copy(elf, EHSIZE + PHSIZE);
  return elf;
}

export interface ProbeResult {
  ran: boolean;
  /** What happened, for the console: "exit status 42", or why it did not run. */
  detail: string;
}

/**
 * Executes the probe ELF, written into `dir` (a directory that allows exec: the build's own).
 * Node's spawn goes through execvp, which hands a file the kernel refuses with ENOEXEC to /bin/sh;
 * so only the status 42 means the i386 code ran.
 */
export function probeI386(dir: string): ProbeResult {
  const path = join(dir, "i386-probe.elf");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, i386ProbeElf());
  chmodSync(path, 0o755);
  try {
    const r = spawnSync(path, [], { encoding: "utf8", timeout: 10_000 });
    if (r.status === PROBE_EXIT_STATUS)
      return { ran: true, detail: `a 96-byte i386 ELF ran (exit status ${r.status})` };
    const why = r.error?.message ?? (r.stderr.trim().split("\n")[0] || `status ${r.status ?? r.signal}`);
    return {
      ran: false,
      detail: `a 96-byte i386 ELF did not run (${why}: the kernel refused it, "Exec format error")`,
    };
  } finally {
    rmSync(path, { force: true });
  }
}

/** What the choice needs to know about the host. */
export interface HostI386Facts {
  /** VESSEL_HOST_I386 as given. */
  override: string | undefined;
  /** The probe ELF's result (not run when the override decides). */
  probe: ProbeResult | undefined;
  /** Enabled binfmt_misc entries of the host that take i386 ELFs (not Vessel's own). */
  interceptors: BinfmtEntry[];
  /** qemu-i386-static's path, if installed. */
  qemu: string | undefined;
}

export type I386Exec =
  | { kind: "native"; why: string }
  | { kind: "qemu"; qemu: string; why: string }
  | { kind: "unavailable"; why: string };

/** The override's meaning: true/false, or undefined to probe. */
export function parseHostI386Override(value: string | undefined): boolean | undefined {
  if (value === undefined || value === "") return undefined;
  if (value === "0") return false;
  if (value === "1") return true;
  throw new GuestError(
    "GUEST_BAD_OVERRIDE",
    `${HOST_I386_ENV}="${value}": give 0 (treat this host as unable to run i386 code) or 1 (as able), or leave it unset to probe`,
    { value },
  );
}

/** Picks how i386 code runs in the chroot, and says why. Pure: the facts are gathered by hostI386Facts. */
export function chooseI386Exec(facts: HostI386Facts): I386Exec {
  const forced = parseHostI386Override(facts.override);
  const withoutF = facts.interceptors.filter((e) => !e.flags.includes("F"));
  let notNative: string;
  if (forced === true) {
    return { kind: "native", why: `${HOST_I386_ENV}=1 says this host runs i386 code` };
  } else if (forced === false) {
    notNative = `${HOST_I386_ENV}=0 says this host cannot run i386 code`;
  } else if (facts.probe === undefined || !facts.probe.ran) {
    notNative = `this host cannot execute i386 code: ${facts.probe?.detail ?? "not probed"}`;
  } else if (withoutF.length > 0) {
    const e = withoutF[0]!;
    notNative = `this host's binfmt_misc entry "${e.name}" takes i386 ELFs to ${e.interpreter} without flag F, which is not found inside a chroot`;
  } else if (facts.interceptors.length > 0) {
    const e = facts.interceptors[0]!;
    return {
      kind: "native",
      why: `this host runs i386 code through its binfmt_misc entry "${e.name}" (${e.interpreter}, flag F: it works in a chroot); ${facts.probe.detail}`,
    };
  } else {
    return { kind: "native", why: `this host runs i386 code natively: ${facts.probe.detail}` };
  }
  if (facts.qemu === undefined) {
    return {
      kind: "unavailable",
      why: `${notNative}, and ${QEMU_I386} is not installed to emulate it. Install it (apt-get install ${QEMU_PACKAGE}; scripts/setup-host.sh does), or build on a host whose kernel runs i386 code (CONFIG_IA32_EMULATION)`,
    };
  }
  return {
    kind: "qemu",
    qemu: facts.qemu,
    why: `${notNative}: debootstrap's second stage runs under QEMU user-mode emulation (${facts.qemu}) through binfmt_misc`,
  };
}

export function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"];
  for (const d of dirs) {
    if (d === "") continue;
    try {
      accessSync(join(d, name), constants.X_OK);
      return join(d, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Vessel's own entries left by a build that died (its pid is gone): removed, else they would stay. */
export function removeStaleEntries(entries: readonly BinfmtEntry[], dir = BINFMT_DIR): void {
  for (const e of entries) {
    if (!e.name.startsWith(VESSEL_ENTRY_PREFIX)) continue;
    const pid = Number(e.name.slice(VESSEL_ENTRY_PREFIX.length));
    if (Number.isInteger(pid) && pid > 0 && !pidAlive(pid)) removeBinfmt(e.name, dir);
  }
}

/** Gathers the facts for chooseI386Exec: the override, the probe (in `dir`), binfmt_misc, QEMU. */
export function hostI386Facts(dir: string, env: NodeJS.ProcessEnv = process.env): HostI386Facts {
  const override = env[HOST_I386_ENV];
  const forced = parseHostI386Override(override);
  const head = i386ProbeElf();
  const interceptors = listBinfmtEntries().filter(
    (e) => e.enabled && !e.name.startsWith(VESSEL_ENTRY_PREFIX) && entryMatches(e, head),
  );
  return {
    override,
    probe: forced === undefined ? probeI386(dir) : undefined,
    interceptors: binfmtState() === "enabled" ? interceptors : [],
    qemu: findProgram(QEMU_I386),
  };
}

/** How `arch` code runs in a chroot on this host. */
export function planChrootExec(arch: GuestArch, dir: string): I386Exec {
  if (arch === "amd64") {
    return process.arch === "x64"
      ? { kind: "native", why: "it is this x86-64 host's own" }
      : { kind: "unavailable", why: `an amd64 tree needs an x86-64 host (this one is ${process.arch})` };
  }
  return chooseI386Exec(hostI386Facts(dir));
}

export type ChrootMethod = "native" | "qemu-binfmt-private" | "qemu-binfmt-host";

export interface ChrootRun extends StreamingResult {
  method: ChrootMethod;
  /** What `uname -m` said in the chroot before the command: x86_64 natively, i686 under qemu-i386. */
  machine: string;
  /** One sentence for the console and the manifest: how the command ran, and why. */
  how: string;
}

export interface ChrootRunOptions {
  /** The tree's architecture: only an i386 tree falls back to QEMU when it does not run natively. */
  arch: GuestArch;
  progress: Progress;
  prefix: string;
  /** A directory on an exec-allowed file system for Vessel's scratch files (the build's own). */
  workDir: string;
  /**
   * Where QEMU's entry goes: "private" tries a user namespace's own binfmt_misc first (the
   * default), "host" goes straight to the host's (what a kernel before 6.7 gets; for tests).
   */
  scope?: "private" | "host";
}

/** Runs uname -m in the chroot (the tree's own binary: coreutils is in every debootstrap's first stage). */
function chrootMachine(tree: string): { ok: boolean; text: string } {
  const r = spawnSync("chroot", [tree, "/usr/bin/uname", "-m"], { encoding: "utf8", timeout: 60_000 });
  const text = `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() || (r.error?.message ?? `status ${r.status}`);
  return { ok: r.status === 0 && r.stdout.trim() !== "", text };
}

/**
 * Runs `chroot tree ...argv` so that the tree's i386 (or amd64) programs execute, as `plan` says:
 * natively, or under qemu-i386-static registered in binfmt_misc with flags P and F. QEMU's entry
 * goes into a private binfmt_misc instance of a new user namespace where the kernel allows one
 * (Linux 6.7 and later), so no other process on the host sees it; else into the host's binfmt_misc,
 * only for the command's duration, unless the host already has an i386 entry with flag F.
 * Before `argv` a program of the tree runs in the chroot, so a chroot that cannot run is said plainly.
 */
export async function runInChroot(
  plan: I386Exec,
  tree: string,
  argv: string[],
  options: ChrootRunOptions,
): Promise<ChrootRun> {
  if (plan.kind === "unavailable") throw new GuestError("GUEST_NO_I386", plan.why, {});
  if (plan.kind === "native") {
    const m = chrootMachine(tree);
    if (m.ok) {
      options.progress(`${options.prefix}checked: uname -m in the chroot says ${m.text}`);
      const r = await runStreaming("chroot", [tree, ...argv], options.progress, options.prefix);
      return { ...r, method: "native", machine: m.text, how: `native: ${plan.why}` };
    }
    const qemu = options.arch === "i386" ? findProgram(QEMU_I386) : undefined;
    if (qemu === undefined) {
      throw new GuestError(
        "GUEST_NO_I386",
        `the tree's programs do not run in the chroot (${m.text}), though ${plan.why}${options.arch === "i386" ? `; install ${QEMU_PACKAGE} to run them under QEMU` : ""}`,
        { tree },
      );
    }
    plan = {
      kind: "qemu",
      qemu,
      why: `the tree's programs do not run natively in the chroot (${m.text}): QEMU user-mode emulation (${qemu}) through binfmt_misc`,
    };
    options.progress(`${options.prefix}${plan.why}`);
  }
  const scratch = join(options.workDir, "binfmt");
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(join(scratch, "mnt"), { recursive: true });
  // Named *-binfmt-P so that QEMU takes the argv[0] flag P passes (see binfmt_misc.ts).
  const interpreter = join(scratch, "qemu-i386-binfmt-P");
  symlinkSync(plan.qemu, interpreter);
  try {
    if (options.scope !== "host") {
      const priv = await runWithPrivateBinfmt(plan, tree, argv, options, interpreter, join(scratch, "mnt"));
      if (priv.kind === "ran") return priv.run;
      options.progress(`${options.prefix}${priv.why}: registering in the host's binfmt_misc instead`);
    }
    return await runWithHostBinfmt(plan, tree, argv, options, interpreter);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** Exit statuses of the namespace script (privateScript) before it runs the command. */
const NS_NO_GO = 97;
const NS_NO_MOUNT = 90;
const NS_NO_REGISTER = 91;
const NS_CHECK_FAILED = 92;
const CHECK_LINE = "vessel-chroot-check: ";

/**
 * The shell script run in the new user, mount, PID and network namespaces: wait until the parent
 * has written the identity uid/gid maps, mount a binfmt_misc instance of this user namespace,
 * register QEMU in it, check, and exec the command. Values come in through the environment.
 */
function privateScript(): string {
  return [
    `read go || exit ${NS_NO_GO}`,
    `mount -t binfmt_misc vessel-binfmt "$VESSEL_BINFMT" || exit ${NS_NO_MOUNT}`,
    `printf '%s' "$VESSEL_ENTRY" > "$VESSEL_BINFMT/register" || exit ${NS_NO_REGISTER}`,
    `m=$(chroot "$VESSEL_TREE" /usr/bin/uname -m 2>&1) || { echo "${CHECK_LINE}failed: $m"; exit ${NS_CHECK_FAILED}; }`,
    `echo "${CHECK_LINE}$m"`,
    `exec chroot "$VESSEL_TREE" "$@"`,
  ].join("\n");
}

/** Waits until `pid` is in another user namespace than ours (unshare has called unshare(2)). */
async function waitForOwnUserNs(pid: number): Promise<boolean> {
  const ours = readlinkSync("/proc/self/ns/user");
  for (let i = 0; i < 500; i++) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/user`) !== ours) return true;
    } catch {
      return false; // exited
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

async function runWithPrivateBinfmt(
  plan: Extract<I386Exec, { kind: "qemu" }>,
  tree: string,
  argv: string[],
  options: ChrootRunOptions,
  interpreter: string,
  mountDir: string,
): Promise<{ kind: "ran"; run: ChrootRun } | { kind: "fallback"; why: string }> {
  const unshare = findProgram("unshare");
  if (unshare === undefined) return { kind: "fallback", why: "unshare (util-linux) is not installed" };
  let mapped = false;
  let machine = "";
  let checkFailed = "";
  const progress = (line: string): void => {
    const at = line.indexOf(CHECK_LINE);
    if (at >= 0) {
      const said = line.slice(at + CHECK_LINE.length);
      if (said.startsWith("failed: ")) checkFailed = said.slice("failed: ".length);
      else {
        machine = said;
        options.progress(
          `${options.prefix}checked: uname -m in the chroot says ${machine} (QEMU's entry is in a private binfmt_misc instance of a user namespace: nothing else on the host sees it)`,
        );
      }
      return;
    }
    options.progress(line);
  };
  const r = await runStreaming(
    unshare,
    // --net: the second stage needs no network (the packages are in the tree); --pid --fork: the
    // tree's /proc is this namespace's. The identity maps are written from here (mapUser): as root
    // in the parent namespace, all 2^32 ids map to themselves, so chown and setuid files are real.
    [
      "--user",
      "--mount",
      "--pid",
      "--fork",
      "--net",
      "--kill-child",
      "--",
      "/bin/sh",
      "-c",
      privateScript(),
      "vessel-ns",
      ...argv,
    ],
    progress,
    options.prefix,
    {
      env: {
        VESSEL_BINFMT: mountDir,
        VESSEL_ENTRY: registrationLine("vessel-i386", I386_ELF_MAGIC, I386_ELF_MASK, interpreter, "PF"),
        VESSEL_TREE: tree,
        // debootstrap checks that it may mknod in the target; a user namespace may not (the device
        // nodes were made by the first stage, as real root). "lxc" is its name for a container
        // without mknod (debootstrap's functions: detect_container, check_sane_mount).
        container: "lxc",
      },
      onSpawn: (child) => {
        child.stdin?.on("error", () => {}); // the child may be gone already
        void (async () => {
          const pid = child.pid!;
          if (await waitForOwnUserNs(pid)) {
            try {
              for (const f of ["uid_map", "gid_map"]) writeFileSync(`/proc/${pid}/${f}`, "0 0 4294967295\n");
              mapped = true;
            } catch {
              /* said below as a fallback */
            }
          }
          child.stdin?.end(mapped ? "go\n" : "");
        })();
      },
    },
  );
  if (!mapped) return { kind: "fallback", why: "could not make a user namespace with an identity id map" };
  if (r.status === NS_NO_GO) return { kind: "fallback", why: "the user namespace did not start" };
  if (r.status === NS_NO_MOUNT)
    return {
      kind: "fallback",
      why: "this kernel has no binfmt_misc instance per user namespace (Linux 6.7 and later)",
    };
  if (r.status === NS_NO_REGISTER)
    return { kind: "fallback", why: "the kernel refused QEMU's entry in the user namespace's binfmt_misc" };
  if (r.status === NS_CHECK_FAILED) {
    throw new GuestError(
      "GUEST_NO_I386",
      `${plan.qemu} registered with flag F did not run the tree's uname in the chroot: ${checkFailed}`,
      { tree },
    );
  }
  return {
    kind: "ran",
    run: {
      status: r.status,
      tail: r.tail.filter((l) => !l.startsWith(CHECK_LINE)),
      method: "qemu-binfmt-private",
      machine,
      how: `QEMU user-mode emulation in a private binfmt_misc instance (nothing else on the host sees it): ${plan.why}`,
    },
  };
}

async function runWithHostBinfmt(
  plan: Extract<I386Exec, { kind: "qemu" }>,
  tree: string,
  argv: string[],
  options: ChrootRunOptions,
  interpreter: string,
): Promise<ChrootRun> {
  const mounted = mountBinfmt();
  if (mounted === "mounted")
    options.progress(`${options.prefix}mounted binfmt_misc on ${BINFMT_DIR} (left mounted)`);
  if (binfmtState() !== "enabled") {
    throw new GuestError(
      "GUEST_BINFMT_UNAVAILABLE",
      `binfmt_misc is disabled on this host (${BINFMT_DIR}/status): enable it (echo 1 > ${BINFMT_DIR}/status) to run i386 code under ${plan.qemu}`,
      {},
    );
  }
  const entries = listBinfmtEntries();
  removeStaleEntries(entries);
  const head = i386ProbeElf();
  const hostF = entries.find(
    (e) =>
      e.enabled && !e.name.startsWith(VESSEL_ENTRY_PREFIX) && e.flags.includes("F") && entryMatches(e, head),
  );
  let registered: string | undefined;
  let how: string;
  if (hostF !== undefined) {
    how = `the host's binfmt_misc entry "${hostF.name}" (${hostF.interpreter}, flag F; Vessel registered none): ${plan.why}`;
  } else {
    registered = `${VESSEL_ENTRY_PREFIX}${process.pid}`;
    // Newest entries are searched first, so this one wins over a host entry without F.
    registerBinfmt(registrationLine(registered, I386_ELF_MAGIC, I386_ELF_MASK, interpreter, "PF"));
    how = `QEMU user-mode emulation through the host's binfmt_misc entry "${registered}", registered for this build and removed after: ${plan.why}`;
  }
  options.progress(`${options.prefix}${how}`);
  try {
    const m = chrootMachine(tree);
    if (!m.ok) {
      throw new GuestError(
        "GUEST_NO_I386",
        `${plan.qemu} through binfmt_misc did not run the tree's uname in the chroot: ${m.text}`,
        { tree },
      );
    }
    options.progress(`${options.prefix}checked: uname -m in the chroot says ${m.text}`);
    const r = await runStreaming("chroot", [tree, ...argv], options.progress, options.prefix);
    return { ...r, method: "qemu-binfmt-host", machine: m.text, how };
  } finally {
    if (registered !== undefined) removeBinfmt(registered);
  }
}
