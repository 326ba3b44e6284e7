import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

/**
 * Kernel modules of an unpacked Debian kernel package: which file holds which module and what
 * it depends on. Debian's package ships no modules.dep (depmod runs at install time), so the
 * dependencies are read from each module's `.modinfo` ELF section ("depends=a,b", "name=x";
 * linux-source-6.1 scripts/mod/modpost.c writes them), the same information depmod uses.
 */

export interface ModuleInfo {
  name: string;
  /** Path relative to lib/modules/<release>/, e.g. "kernel/drivers/virtio/virtio_mmio.ko". */
  path: string;
  depends: string[];
}

/** Module names use '_' where file names may use '-' (virtio-rng.ko is module virtio_rng). */
export function moduleName(name: string): string {
  return name.replace(/\.ko(\.xz|\.zst|\.gz)?$/, "").replace(/-/g, "_");
}

/** Reads the NUL-separated key=value strings of an ELF object's `.modinfo` section. */
export function readModinfo(elf: Uint8Array): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf.length < 64 || dv.getUint32(0, false) !== 0x7f454c46) throw new Error("not an ELF file");
  const is64 = elf[4] === 2;
  const le = elf[5] === 1;
  const shoff = is64 ? Number(dv.getBigUint64(0x28, le)) : dv.getUint32(0x20, le);
  const shentsize = dv.getUint16(is64 ? 0x3a : 0x2e, le);
  const shnum = dv.getUint16(is64 ? 0x3c : 0x30, le);
  const shstrndx = dv.getUint16(is64 ? 0x3e : 0x32, le);
  const section = (i: number): { name: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    return is64
      ? {
          name: dv.getUint32(at, le),
          offset: Number(dv.getBigUint64(at + 0x18, le)),
          size: Number(dv.getBigUint64(at + 0x20, le)),
        }
      : {
          name: dv.getUint32(at, le),
          offset: dv.getUint32(at + 0x10, le),
          size: dv.getUint32(at + 0x14, le),
        };
  };
  const strtab = section(shstrndx);
  const cstr = (off: number): string => {
    let end = off;
    while (end < elf.length && elf[end] !== 0) end++;
    return new TextDecoder("latin1").decode(elf.subarray(off, end));
  };
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cstr(strtab.offset + s.name) !== ".modinfo") continue;
    const text = new TextDecoder("latin1").decode(elf.subarray(s.offset, s.offset + s.size));
    for (const kv of text.split("\0")) {
      const eq = kv.indexOf("=");
      if (eq <= 0) continue;
      const key = kv.slice(0, eq);
      const list = out.get(key) ?? [];
      list.push(kv.slice(eq + 1));
      out.set(key, list);
    }
  }
  return out;
}

/** Lists every *.ko* file under `modulesDir` (lib/modules/<release>) by module name. */
export function listModuleFiles(modulesDir: string): Map<string, string> {
  const byName = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir)) {
      const full = join(dir, entry);
      if (statSync(full).isDirectory()) walk(full);
      else if (/\.ko(\.xz|\.zst|\.gz)?$/.test(entry))
        byName.set(moduleName(entry), relative(modulesDir, full));
    }
  };
  walk(join(modulesDir, "kernel"));
  return byName;
}

/**
 * The modules to load for `wanted`, dependencies first (a topological order), skipping modules
 * built into the kernel. Returns the load order and the wanted names found nowhere.
 */
export function resolveModules(
  wanted: readonly string[],
  files: ReadonlyMap<string, string>,
  builtin: ReadonlySet<string>,
  dependsOf: (name: string, path: string) => string[],
): { order: ModuleInfo[]; missing: string[] } {
  const order: ModuleInfo[] = [];
  const done = new Set<string>();
  const missing: string[] = [];
  const visit = (name: string, stack: string[]): void => {
    const n = moduleName(name);
    if (done.has(n) || builtin.has(n)) return;
    const path = files.get(n);
    if (path === undefined) {
      if (!missing.includes(n)) missing.push(n);
      return;
    }
    if (stack.includes(n)) return; // a dependency cycle cannot load anyway; do not loop
    const depends = dependsOf(n, path);
    for (const d of depends) visit(d, [...stack, n]);
    done.add(n);
    order.push({ name: n, path, depends });
  };
  for (const w of wanted) visit(w, []);
  return { order, missing };
}

/** Parses modules.builtin ("kernel/drivers/tty/serial/8250/8250.ko" lines) into module names. */
export function parseBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l.length > 0)
      .map((l) => moduleName(l.slice(l.lastIndexOf("/") + 1))),
  );
}
