#!/usr/bin/env node
// vessel-runc: Vessel's OCI runtime with runc's command line (podman: --runtime /path/to/vessel-runc).
// It loads only the runtime's modules (not the whole `vessel` CLI) to keep every call cheap:
// podman runs the runtime several times per container. It never relies on $PATH.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("../dist/src/cli/runtime.js", import.meta.url));
if (!existsSync(main)) {
  process.stderr.write(
    "vessel-runc: not built yet: run `npm install` (or `npm run build`) in the checkout first\n",
  );
  process.exit(2);
}
const { run } = await import(main);
process.exitCode = await run(process.argv.slice(2));
