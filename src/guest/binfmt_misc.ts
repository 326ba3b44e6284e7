import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GuestError } from "./guest_error.js";

/**
 * The kernel's binfmt_misc interface (Documentation/admin-guide/binfmt-misc.rst): a file system,
 * usually at /proc/sys/fs/binfmt_misc, where writing `:name:type:offset:magic:mask:interpreter:flags`
 * to `register` makes execve(2) hand every file whose first bytes match (magic & mask) to the
 * interpreter, and writing -1 to the entry's file removes it. Vessel registers QEMU's user-mode
 * emulator for i386 ELFs here so that debootstrap's second stage runs on a host whose kernel
 * cannot execute 32-bit x86 code.
 *
 * Facts this relies on (checked on Linux 6.18):
 * - Entries are searched newest first, and before the kernel's own ELF loader: an i386 entry takes
 *   over every i386 exec, even on a host that runs i386 natively.
 * - Flag F ("fix binary") opens the interpreter when the entry is registered, so it works inside a
 *   chroot that does not contain it. Without F the interpreter's path is looked up in the exec'ing
 *   process's root at every exec: in a chroot it is not there.
 * - Flag P ("preserve argv[0]") passes the original argv[0] as an extra argument; QEMU takes it only
 *   when its own argv[0] ends in "-binfmt-P" (Debian's qemu-user-static names its links that way).
 * - Since Linux 6.7 each user namespace may mount its own binfmt_misc instance; processes of that
 *   namespace see only its entries, and nothing outside sees them (fs/binfmt_misc.c, load_binfmt_misc).
 */

export const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";

/**
 * QEMU's i386 ELF match (qemu's scripts/qemu-binfmt-conf.sh, i386_magic and i386_mask): ELF,
 * 32-bit, little-endian, version 1, e_type ET_EXEC or ET_DYN (the mask's 0xfe), e_machine EM_386 (3).
 */
export const I386_ELF_MAGIC = Buffer.from([
  0x7f, 0x45, 0x4c, 0x46, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
  0x03, 0x00,
]);
export const I386_ELF_MASK = Buffer.from([
  0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xfe, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff,
  0xff, 0xff,
]);

/** One entry as /proc/sys/fs/binfmt_misc/<name> describes it. */
export interface BinfmtEntry {
  name: string;
  enabled: boolean;
  interpreter: string;
  /** The flag letters, e.g. "PF" or "OCF" ("" when none). */
  flags: string;
  /** A magic entry's offset, magic and mask; an extension entry (type E) has none. */
  offset?: number;
  magic?: Buffer;
  mask?: Buffer;
}

/** Parses the text of /proc/sys/fs/binfmt_misc/<name> (fs/binfmt_misc.c, entry_status). */
export function parseBinfmtEntry(name: string, text: string): BinfmtEntry {
  const lines = text.split("\n");
  const field = (key: string): string | undefined =>
    lines.find((l) => l.startsWith(`${key} `))?.slice(key.length + 1);
  const flags =
    lines
      .find((l) => l.startsWith("flags:"))
      ?.slice("flags:".length)
      .trim() ?? "";
  const entry: BinfmtEntry = {
    name,
    enabled: lines[0]?.trim() === "enabled",
    interpreter: field("interpreter") ?? "",
    flags,
  };
  const magic = field("magic");
  if (magic !== undefined) {
    entry.offset = Number(field("offset") ?? "0");
    entry.magic = Buffer.from(magic.trim(), "hex");
    const mask = field("mask");
    entry.mask =
      mask === undefined ? Buffer.alloc(entry.magic.length, 0xff) : Buffer.from(mask.trim(), "hex");
  }
  return entry;
}

/** Whether the entry's magic matches a file that begins with `head` (the kernel's check_file). */
export function entryMatches(entry: BinfmtEntry, head: Uint8Array): boolean {
  if (entry.magic === undefined || entry.mask === undefined) return false;
  const off = entry.offset ?? 0;
  if (head.length < off + entry.magic.length) return false;
  for (let i = 0; i < entry.magic.length; i++) {
    if (((head[off + i]! ^ entry.magic[i]!) & (entry.mask[i] ?? 0xff)) !== 0) return false;
  }
  return true;
}

/** `\xNN` for every byte: what `register` accepts for the magic and the mask. */
function escaped(bytes: Uint8Array): string {
  return [...bytes].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("");
}

/** The line written to `register` for a magic entry. */
export function registrationLine(
  name: string,
  magic: Uint8Array,
  mask: Uint8Array,
  interpreter: string,
  flags: string,
): string {
  // The kernel splits the line at ':' and refuses '/' in a name (fs/binfmt_misc.c, create_entry).
  if (!/^[\w.-]+$/.test(name) || name === "." || name === "..")
    throw new GuestError(
      "GUEST_BINFMT_BAD_ENTRY",
      `binfmt_misc entry name "${name}" must be letters, digits, '_', '.' or '-'`,
      { name },
    );
  if (interpreter === "" || /[:\n]/.test(interpreter))
    throw new GuestError(
      "GUEST_BINFMT_BAD_ENTRY",
      `binfmt_misc interpreter "${interpreter}" must be a path without ':' or newlines`,
      { interpreter },
    );
  return `:${name}:M::${escaped(magic)}:${escaped(mask)}:${interpreter}:${flags}`;
}

/** The entries of the binfmt_misc mounted at `dir` (none if it is not mounted). */
export function listBinfmtEntries(dir = BINFMT_DIR): BinfmtEntry[] {
  if (!existsSync(join(dir, "register"))) return [];
  const out: BinfmtEntry[] = [];
  for (const name of readdirSync(dir)) {
    if (name === "register" || name === "status") continue;
    try {
      out.push(parseBinfmtEntry(name, readFileSync(join(dir, name), "utf8")));
    } catch {
      // removed meanwhile
    }
  }
  return out;
}

/** Whether binfmt_misc is mounted at `dir` and globally enabled (its `status` file says so). */
export function binfmtState(dir = BINFMT_DIR): "enabled" | "disabled" | "not-mounted" {
  if (!existsSync(join(dir, "register"))) return "not-mounted";
  try {
    return readFileSync(join(dir, "status"), "utf8").trim() === "enabled" ? "enabled" : "disabled";
  } catch {
    return "not-mounted";
  }
}

/** Mounts binfmt_misc at `dir` if it is not mounted there; returns what it did. */
export function mountBinfmt(dir = BINFMT_DIR): "was-mounted" | "mounted" {
  if (existsSync(join(dir, "register"))) return "was-mounted";
  const r = spawnSync("mount", ["-t", "binfmt_misc", "binfmt_misc", dir], { encoding: "utf8" });
  if (r.error !== undefined || r.status !== 0 || !existsSync(join(dir, "register"))) {
    throw new GuestError(
      "GUEST_BINFMT_UNAVAILABLE",
      `could not mount binfmt_misc on ${dir} (${(r.stderr || r.error?.message || `status ${r.status}`).trim()}): the kernel needs CONFIG_BINFMT_MISC, and a container needs a writable /proc/sys`,
      { dir },
    );
  }
  return "mounted";
}

/** Registers a magic entry in the binfmt_misc at `dir`; the kernel's refusal is said with its errno. */
export function registerBinfmt(line: string, dir = BINFMT_DIR): void {
  try {
    writeFileSync(join(dir, "register"), line);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new GuestError(
      "GUEST_BINFMT_REFUSED",
      `the kernel refused the binfmt_misc entry (${e.code ?? e.message} writing ${join(dir, "register")}): run as root on the host itself (a container needs CAP_SYS_ADMIN and a writable /proc/sys), or build on a host that runs i386 code. The entry: ${line}`,
      { line, errno: e.code },
      e,
    );
  }
}

/** Removes the entry `name` (writing -1 to its file); absent already is fine. */
export function removeBinfmt(name: string, dir = BINFMT_DIR): void {
  const path = join(dir, name);
  if (!existsSync(path)) return;
  writeFileSync(path, "-1");
}
