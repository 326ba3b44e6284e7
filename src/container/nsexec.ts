import { type ChildProcess, spawn, type StdioOptions } from "node:child_process";
import { existsSync } from "node:fs";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { ContainerError } from "./errors.js";
import { encodePlan, type Plan } from "./plan.js";

/**
 * Drives one run of the helper (native/nsexec): sends the plan, answers its sync points, and
 * reports the container process's pid. The socket between the runtime and the helper is the
 * stdio "pipe" libuv makes (a Unix socketpair), placed right after the preserved fds.
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
  /** the helper's exit status: the container process's status when the plan said `wait` */
  exit: Promise<number>;
  helper: ChildProcess;
}

export interface HelperHandlers {
  onPid?(pid: number): void;
  /** a sync point ("createRuntime"); resolve to let the container go on, throw to stop it */
  onSync?(name: string, pid: number): Promise<void> | void;
}

export function runHelper(
  plan: Plan,
  preserveFds: number,
  handlers: HelperHandlers = {},
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
  const stdio: StdioOptions = [0, 1, 2];
  for (let i = 0; i < preserveFds; i++) stdio.push(3 + i);
  stdio.push("pipe");
  const syncFd = 3 + preserveFds;
  const helper = spawn(path, [String(syncFd)], { stdio, env: {} });
  const sock = helper.stdio[syncFd] as Socket;
  const exit = new Promise<number>((res) => {
    helper.on("exit", (code, signal) => res(code ?? (signal ? 128 : 255)));
    helper.on("error", () => res(255));
  });
  return new Promise<HelperRun>((resolve, reject) => {
    let pid = 0;
    let buf = "";
    let done = false;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      sock.destroy();
      reject(err);
    };
    helper.on("error", (err) =>
      fail(new ContainerError("helper_spawn", `cannot run ${path}: ${err.message}`, {}, err)),
    );
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
          if (done) return;
          done = true;
          sock.destroy();
          resolve({ pid, exit, helper });
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
    sock.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        chain = chain.then(() => handle(line));
      }
    });
    sock.on("error", () => {});
    sock.on("close", () => {
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
    });
    sock.write(encodePlan(plan));
  });
}
