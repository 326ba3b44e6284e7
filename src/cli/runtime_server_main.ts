/**
 * Entry of the runtime server (container/server.ts), started by the vessel-runc launcher: it
 * serves the runtime's command line (cli/runtime.ts).
 */
import { fileURLToPath } from "node:url";
import { serve } from "../container/server.js";
import { run } from "./runtime.js";
import { runtimeServerSocket } from "./runtime_server.js";

// tsc rewrites its build info on every build: a newer one means the server runs stale code.
const buildInfo = fileURLToPath(new URL("../../.tsbuildinfo", import.meta.url));

serve(run, runtimeServerSocket(), buildInfo).catch((err: unknown) => {
  // the launcher falls back to running the runtime directly
  process.stderr.write(`vessel-runc server: ${(err as Error).message}\n`);
  process.exit(1);
});
