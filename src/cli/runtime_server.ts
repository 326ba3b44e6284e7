/**
 * Where this checkout's runtime server lives: its entry script (the path the vessel-runc launcher
 * starts, native/nsexec/Makefile SERVER_SCRIPT) and the socket derived from that path.
 */
import { fileURLToPath } from "node:url";
import { serverSocketPath } from "../container/server.js";

export const RUNTIME_SERVER_SCRIPT = fileURLToPath(new URL("./runtime_server_main.js", import.meta.url));

/** The socket this checkout's server listens on. */
export function runtimeServerSocket(): string {
  return serverSocketPath(RUNTIME_SERVER_SCRIPT);
}
