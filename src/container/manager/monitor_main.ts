import { appendFileSync, existsSync } from "node:fs";
import { describeError, VesselError } from "../../errors.js";
import { supervise } from "./monitor.js";
import { ContainerStore } from "./state.js";

/**
 * Entry of the detached per-container monitor: `node monitor_main.js <root> <id>`, started by
 * `Manager.startDetached` with an IPC channel on which it reports "started" (or the start error)
 * before the CLI lets go of it. Its fds 1 and 2 are the container's FIFOs (stdout.fifo,
 * stderr.fifo): the container inherits them and the monitor reads them into the log. So the
 * monitor never writes to process.stdout/stderr itself (that would also set O_NONBLOCK on
 * descriptors the container shares); its own messages go to monitor.log.
 */
const [root, id] = process.argv.slice(2);
if (root === undefined || id === undefined) process.exit(2);
const store = new ContainerStore(root);
const note = (msg: string) => {
  try {
    appendFileSync(store.path(id, "monitor.log"), `${new Date().toISOString()} ${msg}\n`);
  } catch {
    // the container directory is gone (rm -f): nothing to note
  }
};
process.on("disconnect", () => {
  // the CLI went away: the container keeps running under this monitor
});
const send = (m: object) => {
  if (process.connected) process.send?.(m);
};
const fifos = { stdout: store.path(id, "stdout.fifo"), stderr: store.path(id, "stderr.fifo") };
try {
  const code = await supervise(store, id, {
    attached: false,
    onStarted: (pid) => send({ type: "started", pid }),
    ...(existsSync(fifos.stdout) && existsSync(fifos.stderr) ? { fifos } : {}),
  });
  note(`container exited with ${code}`);
  process.exit(0);
} catch (err) {
  send({
    type: "error",
    message: describeError(err),
    code: err instanceof VesselError ? err.code : "START_FAILED",
  });
  note(describeError(err));
  process.exit(1);
}
