import { spawn, type StdioOptions } from "node:child_process";
import { existsSync } from "node:fs";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { ContainerError } from "./errors.js";
import { encodePlan, type Plan } from "./plan.js";
import { currentRequest } from "./request.js";

/**
 * Drives one run of the helper (native/nsexec): sends the plan, answers its sync points, reports
 * the container process's pid and (foreground runs) its exit status, and finally tells the
 * helper how to end ("exit N"). Two transports:
 *  - spawn: this process starts the helper, with the channel as the stdio "pipe" libuv makes (a
 *    Unix socketpair) right after the preserved fds;
 *  - server: the runtime server (server.ts) answers a launcher, which execs the helper itself on
 *    its connection when told "exec-helper", so the container's init is the launcher's child
 *    (podman's conmon, a subreaper, must become its parent).
 */

/** The helper binary: native/build/vessel-nsexec of this checkout, or $VESSEL_NSEXEC. */
export function helperPath(): string {
  const env = process.env.VESSEL_NSEXEC;
  if (env) return env;
  return fileURLToPath(new URL("../../../native/build/vessel-nsexec", import.meta.url));
}

export interface HelperRun {
  /** host pid of the process the helper cloned */
  pid: number;
  /** the container process's exit status (plans with `wait`); 255 if the helper vanished */
  exit: Promise<number>;
  /** lets the helper exit with `code` (spawn transport; the server answers for itself) */
  release(code: number): void;
}

export interface HelperHandlers {
  onPid?(pid: number): void;
  /** a sync point ("createRuntime"); resolve to let the container go on, throw to stop it */
  onSync?(name: string, pid: number): Promise<void> | void;
}

/** The descriptors a container's process gets as its fds 0, 1 and 2. */
export type StdioFds = readonly [number, number, number];

export function runHelper(
  plan: Plan,
  preserveFds: number,
  handlers: HelperHandlers = {},
  stdioFds?: StdioFds,
): Promise<HelperRun> {
  const path = helperPath();
  if (!existsSync(path)) {
    return Promise.reject(
      new ContainerError(
        "no_helper",
        `the runtime helper ${path} is missing: run "npm run build" (it needs make and a C compiler)`,
      ),
    );
  }
  const req = currentRequest();
  let sock: Socket;
  let spawned = false;
  if (req) {
    if (stdioFds)
      return Promise.reject(
        new ContainerError("stdio_in_server", "the runtime server passes its client's stdio, not other fds"),
      );
    if (req.helperStarted)
      return Promise.reject(new ContainerError("helper_twice", "one helper per runtime call"));
    req.helperStarted = true;
    sock = req.socket;
    sock.write("exec-helper\n");
  } else {
    const stdio: StdioOptions = stdioFds ? [...stdioFds] : [0, 1, 2];
    for (let i = 0; i < preserveFds; i++) stdio.push(3 + i);
    stdio.push("pipe");
    const syncFd = 3 + preserveFds;
    const helper = spawn(path, [String(syncFd)], { stdio, env: {} });
    helper.on("error", () => sock.destroy());
    sock = helper.stdio[syncFd] as Socket;
    spawned = true;
  }
  let resolveExit: (code: number) => void = () => {};
  const exit = new Promise<number>((res) => {
    resolveExit = res;
  });
  const release = (code: number) => {
    if (!spawned || sock.destroyed) return;
    sock.end(`exit ${code}\n`);
  };
  return new Promise<HelperRun>((resolve, reject) => {
    let pid = 0;
    let buf = "";
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      // spawn: closing the channel ends the helper (exit 1); server: the reply ends it
      if (spawned) sock.destroy();
      reject(err);
    };
    const handle = async (line: string) => {
      const sp = line.indexOf(" ");
      const verb = sp < 0 ? line : line.slice(0, sp);
      const arg = sp < 0 ? "" : line.slice(sp + 1);
      switch (verb) {
        case "pid":
          pid = Number(arg);
          handlers.onPid?.(pid);
          return;
        case "sync":
          try {
            await handlers.onSync?.(arg, pid);
            sock.write("ok\n");
          } catch (err) {
            sock.write("fail\n");
            fail(err as Error);
          }
          return;
        case "ready":
          if (settled) return;
          settled = true;
          resolve({ pid, exit, release });
          return;
        case "exit":
          resolveExit(Number(arg));
          return;
        case "error":
          fail(new ContainerError("init_failed", arg, { pid }));
          return;
        default:
          fail(
            new ContainerError(
              "helper_protocol",
              `unexpected message from the helper: ${JSON.stringify(line)}`,
            ),
          );
      }
    };
    let chain = Promise.resolve();
    const onData = (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        chain = chain.then(() => handle(line));
      }
    };
    const onClose = () => {
      resolveExit(255);
      chain.then(() =>
        fail(
          new ContainerError(
            "init_exited",
            pid
              ? `the container process (pid ${pid}) exited during set-up`
              : "the runtime helper exited before starting the container",
            { pid },
          ),
        ),
      );
    };
    sock.on("data", onData);
    sock.on("error", () => {});
    sock.on("close", onClose);
    sock.write(encodePlan(plan));
  });
}
