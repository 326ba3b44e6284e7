// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner.
// Node 20 has no glob support in `node --test`, so the list is made here.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function find(dir, out) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) find(path, out);
    else if (name.endsWith(".test.js")) out.push(path);
  }
  return out;
}

const filter = process.argv.slice(2);
const files = find("dist/test", [])
  .filter((f) => filter.length === 0 || filter.some((s) => f.includes(s)))
  .sort();
const result = spawnSync(process.execPath, ["--test", "--test-reporter=spec", ...files], {
  stdio: "inherit",
});
process.exit(result.status ?? 1);
