import { spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultSpec } from "../../src/container/default_spec.js";
import type { Spec } from "../../src/container/spec.js";

/** Paths of this checkout (tests run from dist/test/container). */
export const REPO = fileURLToPath(new URL("../../../", import.meta.url));
export const VESSEL_RUNC = join(REPO, "bin/vessel-runc.js");
export const CTEST = join(REPO, "native/build/vessel-ctest");
export const NSEXEC = join(REPO, "native/build/vessel-nsexec");
/** what podman is given: native/nsexec/launcher.c */
export const LAUNCHER = join(REPO, "native/build/vessel-runc");

/** Why an integration test cannot run here, or undefined when it can. */
export function integrationSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (namespaces, cgroups, mounts)";
  if (!existsSync(NSEXEC)) return `helper not built: ${NSEXEC} (npm run build needs make and cc)`;
  if (!existsSync(CTEST)) return `test program not built: ${CTEST} (needs a static libc: libc6-dev)`;
  if (!existsSync("/proc/self/ns/pid")) return "no namespaces in this kernel";
  return undefined;
}

export interface Bundle {
  dir: string;
  bundle: string;
  root: string;
  rootfs: string;
  spec: Spec;
  /** the spec as made, before any rewriteSpec */
  base: Spec;
  cleanup(): void;
}

/**
 * A bundle whose rootfs holds only the static multi-call test program as /bin/ctest, with the
 * spec `vessel-runc spec` writes, adjusted by `edit`. The state root is private to the test.
 */
export function makeBundle(edit: (s: Spec) => void = () => {}): Bundle {
  const dir = mkdtempSync(join(tmpdir(), "vessel-ct-"));
  chmodSync(dir, 0o755); // reachable by a container root mapped to another host uid
  const bundle = join(dir, "bundle");
  const rootfs = join(bundle, "rootfs");
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc"])
    mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync(CTEST, join(rootfs, "bin/ctest"));
  chmodSync(join(rootfs, "bin/ctest"), 0o755);
  chmodSync(join(rootfs, "tmp"), 0o1777);
  const spec = defaultSpec();
  spec.process!.terminal = false;
  spec.process!.args = ["/bin/ctest", "pid"];
  spec.root!.readonly = false;
  edit(spec);
  writeFileSync(join(bundle, "config.json"), JSON.stringify(spec, null, 1));
  const root = join(dir, "state");
  return {
    dir,
    bundle,
    root,
    rootfs,
    spec,
    base: structuredClone(spec),
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function rewriteSpec(b: Bundle, edit: (s: Spec) => void): void {
  edit(b.spec);
  writeFileSync(join(b.bundle, "config.json"), JSON.stringify(b.spec, null, 1));
}

/**
 * Runs `vessel-runc --root <b.root> ...args` and captures its output. Output goes through files,
 * not pipes: a container created by the call inherits its stdio (as under conmon) and would keep
 * a pipe open, and the call would seem to last as long as the container.
 */
export function vesselRunc(
  b: Bundle | { root: string; dir?: string },
  args: string[],
  extra: { input?: string; timeout?: number; launcher?: boolean; env?: NodeJS.ProcessEnv } = {},
): { status: number | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), "vessel-out-"));
  const out = openSync(join(dir, "out"), "w+");
  const err = openSync(join(dir, "err"), "w+");
  try {
    const [cmd, pre] = extra.launcher ? [LAUNCHER, []] : [process.execPath, [VESSEL_RUNC]];
    const r = spawnSync(cmd, [...pre, "--root", b.root, ...args], {
      env: extra.env ?? process.env,
      input: extra.input ?? "",
      stdio: ["pipe", out, err],
      timeout: extra.timeout ?? 60000,
      cwd: "bundle" in b ? b.bundle : undefined,
    });
    return {
      status: r.status,
      stdout: readFileSync(join(dir, "out"), "utf8"),
      stderr: readFileSync(join(dir, "err"), "utf8"),
    };
  } finally {
    closeSync(out);
    closeSync(err);
    rmSync(dir, { recursive: true, force: true });
  }
}

let seq = 0;
export function uniqueId(prefix: string): string {
  return `${prefix}-${process.pid}-${++seq}`;
}
