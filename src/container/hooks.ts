import { spawnSync } from "node:child_process";
import { ContainerError } from "./errors.js";
import type { Hook, HookName } from "./spec.js";

/**
 * Runs the hooks that execute in the runtime's namespaces (prestart, createRuntime, poststart,
 * poststop; config.md "POSIX-platform Hooks"), each with the container's state JSON on stdin.
 * createContainer and startContainer run inside the container: the helper runs those (plan.ts).
 */
export function runHooks(name: HookName, hooks: readonly Hook[] | undefined, state: string): void {
  for (const h of hooks ?? []) {
    const args = h.args ?? [h.path];
    const r = spawnSync(h.path, args.slice(1), {
      argv0: args[0] ?? h.path,
      input: state,
      env: Object.fromEntries(
        (h.env ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]),
      ),
      timeout: h.timeout ? h.timeout * 1000 : undefined,
      stdio: ["pipe", "ignore", "pipe"],
    });
    if (r.error || r.status !== 0) {
      const why = r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `exit status ${r.status}`;
      const stderr = r.stderr?.toString().trim();
      throw new ContainerError(
        "hook_failed",
        `${name} hook ${h.path} failed: ${why}${stderr ? `: ${stderr}` : ""}`,
        { hook: h.path, name },
        r.error,
      );
    }
  }
}
