import { AsyncLocalStorage } from "node:async_hooks";
import type { Socket } from "node:net";
import { resolve } from "node:path";

/**
 * One call of the runtime served by the runtime server (server.ts) for the launcher: the caller's
 * working directory, its connection, and the output to send back. Outside the server there is
 * no request: output goes to fds 1 and 2 and paths resolve against process.cwd().
 */
export interface Request {
  cwd: string;
  socket: Socket;
  stdout: Buffer[];
  stderr: Buffer[];
  /** set once the launcher has become the helper (it then reads a plan, not output) */
  helperStarted: boolean;
}

export const requestContext = new AsyncLocalStorage<Request>();

export function currentRequest(): Request | undefined {
  return requestContext.getStore();
}

/** A path the caller gave, resolved against the caller's working directory. */
export function callerPath(p: string): string {
  return resolve(currentRequest()?.cwd ?? process.cwd(), p);
}
