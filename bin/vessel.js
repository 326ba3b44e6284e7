#!/usr/bin/env node
// Entry point of the `vessel` command: the compiled CLI lives in dist/ (built by `npm install`).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("../dist/src/cli/main.js", import.meta.url));
if (!existsSync(main)) {
  process.stderr.write("vessel: not built yet: run `npm install` (or `npm run build`) in the checkout first\n");
  process.exit(2);
}
const { runCli } = await import(main);
process.exitCode = await runCli(process.argv.slice(2));
