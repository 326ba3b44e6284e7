// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner, then prints what
// was skipped and why, grouped by reason (scripts/skip_reporter.mjs collects them).
// Node 20 has no glob support in `node --test`, so the list is made here.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

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
const scratch = mkdtempSync(join(tmpdir(), "vessel-test-"));
const skipsFile = join(scratch, "skips.jsonl");
const result = spawnSync(
  process.execPath,
  [
    "--test",
    "--test-reporter=spec",
    "--test-reporter-destination=stdout",
    `--test-reporter=${join(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "skip_reporter.mjs")}`,
    `--test-reporter-destination=${skipsFile}`,
    ...files,
  ],
  { stdio: "inherit" },
);
printSkips(skipsFile);
rmSync(scratch, { recursive: true, force: true });
process.exit(result.status ?? 1);

/** The skipped tests, grouped by reason, most frequent first. */
function printSkips(path) {
  let lines = [];
  try {
    lines = readFileSync(path, "utf8").split("\n").filter(Boolean);
  } catch {
    return;
  }
  const byReason = new Map();
  for (const line of lines) {
    const { name, file, reason } = JSON.parse(line);
    const where = file === "" ? "" : ` (${relative("dist", file).replace(/\.js$/, ".ts")})`;
    byReason.set(reason, [...(byReason.get(reason) ?? []), `${name}${where}`]);
  }
  console.log(`\nskipped: ${lines.length} test(s)${lines.length === 0 ? "" : ", by reason:"}`);
  for (const [reason, tests] of [...byReason].sort((a, b) => b[1].length - a[1].length)) {
    console.log(`- ${reason}: ${tests.length}`);
    for (const t of tests) console.log(`    ${t}`);
  }
}
