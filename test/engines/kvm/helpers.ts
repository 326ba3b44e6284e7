import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { EntryState, SegmentState } from "../../../src/boot/entry_state.js";
import type { AccessSize } from "../../../src/bus/device.js";
import type { IoHandler } from "../../../src/engines/kvm/run_loop.js";

/** The payload sources, in the source tree (tests run from dist/test/...). */
const here = dirname(fileURLToPath(import.meta.url));
export const PAYLOAD_DIR = join(here, "../../../../test/engines/kvm/payloads");

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
    ["-f", "bin", "-I", `${PAYLOAD_DIR}/`, "-o", out, join(PAYLOAD_DIR, `${name}.asm`)],
    {
      encoding: "utf8",
    },
  );
  if (r.status !== 0) throw new Error(`nasm failed on ${name}.asm: ${r.stderr}`);
  return new Uint8Array(readFileSync(out));
}

const flat = (selector: number, type: number, dpl = 0): SegmentState => ({
  selector,
  base: 0,
  limit: 0xffffffff,
  type,
  present: true,
  dpl,
  s: true,
  db: true,
  l: false,
  g: true,
});

/**
 * 32-bit protected mode without paging, flat 4 GiB segments (CS 0x08 execute/read, data 0x10),
 * as a kernel's 32-bit entry: the state every payload starts from.
 */
export function flat32Entry(rip: number, rsp = 0x7f000): EntryState {
  return {
    mode: "protected32",
    rip,
    rsp,
    rsi: 0,
    rflags: 2,
    cr0: 0x11, // PE | ET
    cr3: 0,
    cr4: 0,
    efer: 0,
    cs: flat(0x08, 0xb),
    ds: flat(0x10, 0x3),
    es: flat(0x10, 0x3),
    fs: flat(0x10, 0x3),
    gs: flat(0x10, 0x3),
    ss: flat(0x10, 0x3),
    tr: {
      selector: 0,
      base: 0,
      limit: 0xffff,
      type: 0xb,
      present: true,
      dpl: 0,
      s: false,
      db: false,
      l: false,
      g: false,
    },
    ldt: {
      selector: 0,
      base: 0,
      limit: 0xffff,
      type: 0x2,
      present: true,
      dpl: 0,
      s: false,
      db: false,
      l: false,
      g: false,
    },
    gdt: { base: 0, limit: 0xffff },
    idt: { base: 0, limit: 0xffff },
  };
}

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
