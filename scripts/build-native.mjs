// Builds the native helpers from our own C sources (native/*/Makefile) into native/build/.
// Each helper is optional for the build: a missing compiler is reported, not fatal, and the
// tests that need the helper skip with that reason.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

const names = existsSync("native") ? readdirSync("native") : [];
for (const name of names) {
  const dir = join("native", name);
  if (!existsSync(join(dir, "Makefile"))) continue;
  const r = spawnSync("make", ["-s", "-C", dir], { stdio: "inherit" });
  if (r.status !== 0) process.stderr.write(`build-native: ${dir} failed to build (exit ${r.status})\n`);
}
