/**
 * Assembles NASM sources at test time with Debian's `nasm` (flat binary output). Sources are our
 * own (inline in the tests or the .asm files beside them); results are cached by content hash in
 * the temporary directory so a test run assembles each snippet once.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

let probed: string | null | undefined;

/** null when nasm can be run, else why not (the caller skips with this reason). */
export function nasmUnavailable(): string | null {
  if (probed !== undefined) return probed;
  const r = spawnSync("nasm", ["-v"], { encoding: "utf8" });
  probed =
    r.error || r.status !== 0 ? "nasm is not installed (Debian package nasm; scripts/setup-host.sh)" : null;
  return probed;
}

const cacheDir = join(tmpdir(), "vessel-nasm-cache");

/** Assembles `source` to a flat binary; throws with nasm's messages and the numbered source on error. */
export function assemble(source: string): Uint8Array {
  const key = createHash("sha256").update(source).digest("hex").slice(0, 24);
  mkdirSync(cacheDir, { recursive: true });
  const bin = join(cacheDir, `${key}.bin`);
  if (existsSync(bin)) return new Uint8Array(readFileSync(bin));
  const src = join(cacheDir, `${key}.asm`);
  writeFileSync(src, source);
  const tmp = `${bin}.${process.pid}`;
  const r = spawnSync("nasm", ["-f", "bin", "-o", tmp, src], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    const numbered = source
      .split("\n")
      .map((l, i) => `${String(i + 1).padStart(4)} ${l}`)
      .join("\n");
    throw new Error(`nasm failed: ${r.error?.message ?? r.stderr}\n${numbered}`);
  }
  const out = readFileSync(tmp);
  writeFileSync(bin, out);
  return new Uint8Array(out);
}

/**
 * The offset of each source line's first byte (1-based line number -> offset), from nasm's
 * listing (`-l`): lines that emit nothing are absent. Cached like `assemble`.
 */
export function lineOffsets(source: string): Map<number, number> {
  const key = createHash("sha256").update(source).digest("hex").slice(0, 24);
  mkdirSync(cacheDir, { recursive: true });
  const lst = join(cacheDir, `${key}.lst`);
  if (!existsSync(lst)) {
    const src = join(cacheDir, `${key}.l.asm`);
    writeFileSync(src, source);
    const tmp = `${lst}.${process.pid}`;
    const r = spawnSync("nasm", ["-f", "bin", "-o", "/dev/null", "-l", tmp, src], { encoding: "utf8" });
    if (r.error || r.status !== 0) throw new Error(`nasm failed: ${r.error?.message ?? r.stderr}`);
    writeFileSync(lst, readFileSync(tmp));
  }
  const out = new Map<number, number>();
  for (const line of readFileSync(lst, "utf8").split("\n")) {
    // "     5 00000000 DD042508005000          fld qword [DATA+8]"
    const m = /^\s*(\d+) ([0-9A-F]{8}) [0-9A-F]/.exec(line);
    if (m && !out.has(Number(m[1]))) out.set(Number(m[1]), Number.parseInt(m[2]!, 16));
  }
  return out;
}
