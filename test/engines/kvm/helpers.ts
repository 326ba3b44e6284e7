import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AccessSize } from "../../../src/bus/device.js";
import type { IoHandler } from "../../../src/engines/kvm/run_loop.js";

/** The payload sources, in the source tree (tests run from dist/test/...). */
const here = dirname(fileURLToPath(import.meta.url));
export const PAYLOAD_DIR = join(here, "../../../../test/engines/kvm/payloads");
/** Shared includes (long-mode entry, trap stubs), also used by the oracle kernel. */
export const INCLUDE_DIR = join(here, "../../../../src/engines/kvm/payloads");

function hasNasm(): boolean {
  return spawnSync("nasm", ["-v"], { stdio: "ignore" }).status === 0;
}

/** Why the KVM payload tests cannot run here, or undefined if they can. */
export function kvmSkipReason(): string | undefined {
  if (!existsSync("/dev/kvm")) return "no /dev/kvm on this host";
  if (!hasNasm()) return "nasm is not installed (scripts/setup-host.sh installs it)";
  return undefined;
}

const outDir = mkdtempSync(join(tmpdir(), "vessel-payload-"));

/** Assembles test/engines/kvm/payloads/<name>.asm with Debian's nasm into a flat binary. */
export function assemble(name: string): Uint8Array {
  const out = join(outDir, `${name}.bin`);
  const r = spawnSync(
    "nasm",
    [
      "-f",
      "bin",
      "-I",
      `${PAYLOAD_DIR}/`,
      "-I",
      `${INCLUDE_DIR}/`,
      "-o",
      out,
      join(PAYLOAD_DIR, `${name}.asm`),
    ],
    {
      encoding: "utf8",
    },
  );
  if (r.status !== 0) throw new Error(`nasm failed on ${name}.asm: ${r.stderr}`);
  return new Uint8Array(readFileSync(out));
}

export { flat32Entry } from "../../../src/engines/kvm/payload_entry.js";

/** An IoHandler that records every access; reads come from `answers` (default all ones). */
export class RecordingIo implements IoHandler {
  readonly log: string[] = [];
  readonly portWrites: { port: number; size: number; value: number }[] = [];
  onPortWrite: ((port: number, value: number) => void) | undefined;
  answers = new Map<number, number>();

  pioIn(port: number, size: AccessSize): number {
    this.log.push(`in ${port.toString(16)}/${size}`);
    return this.answers.get(port) ?? (size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff);
  }
  pioOut(port: number, size: AccessSize, value: number): void {
    this.log.push(`out ${port.toString(16)}/${size}=${value.toString(16)}`);
    this.portWrites.push({ port, size, value });
    this.onPortWrite?.(port, value);
  }
  mmioRead(addr: number, size: AccessSize): number {
    this.log.push(`mmio read ${addr.toString(16)}/${size}`);
    return this.answers.get(addr) ?? 0;
  }
  mmioWrite(addr: number, size: AccessSize, value: number): void {
    this.log.push(`mmio write ${addr.toString(16)}/${size}=${value.toString(16)}`);
  }
  writesTo(port: number): number[] {
    return this.portWrites.filter((w) => w.port === port).map((w) => w.value);
  }
}
