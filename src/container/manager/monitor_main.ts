import { describeError, VesselError } from "../../errors.js";
import { supervise } from "./monitor.js";
import { ContainerStore } from "./state.js";

/**
 * Entry of the detached per-container monitor: `node monitor_main.js <root> <id>`, started by
 * `Manager.startDetached` with an IPC channel on which it reports "started" (or the start error)
 * before the CLI lets go of it. Its own stdout/stderr go to the container's monitor.log.
 */
const [root, id] = process.argv.slice(2);
if (root === undefined || id === undefined) {
  process.stderr.write("usage: monitor_main.js ROOT ID\n");
  process.exit(2);
}
process.on("disconnect", () => {
  // the CLI went away: the container keeps running under this monitor
});
const send = (m: object) => {
  if (process.connected) process.send?.(m);
};
try {
  const code = await supervise(new ContainerStore(root), id, {
    attached: false,
    onStarted: (pid) => send({ type: "started", pid }),
  });
  process.stdout.write(`${new Date().toISOString()} container exited with ${code}\n`);
  process.exit(0);
} catch (err) {
  send({
    type: "error",
    message: describeError(err),
    code: err instanceof VesselError ? err.code : "START_FAILED",
  });
  process.stderr.write(`${new Date().toISOString()} ${describeError(err)}\n`);
  process.exit(1);
}
