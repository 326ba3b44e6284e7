/** Entry of the runtime server (server.ts), started by the vessel-runc launcher. */
import { serve } from "./server.js";

serve().catch((err: unknown) => {
  // the launcher falls back to running the runtime directly
  process.stderr.write(`vessel-runc server: ${(err as Error).message}\n`);
  process.exit(1);
});
