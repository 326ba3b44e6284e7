import { readFileSync } from "node:fs";
import { isAbsolute } from "node:path";
import { UsageError } from "../../errors.js";

/**
 * Parsing of `docker run`'s value syntaxes: -v, -p, -e/--env-file, --memory, --cpus, --restart.
 * Each parser throws UsageError quoting the bad value and the accepted form.
 */

export interface VolumeSpec {
  /** Absolute host path, or the name of a named volume. */
  source: string;
  named: boolean;
  target: string;
  readonly: boolean;
}

const VOLUME_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function parseVolume(text: string): VolumeSpec {
  const parts = text.split(":");
  const bad = (why: string) =>
    new UsageError(
      "BAD_VOLUME",
      `invalid -v "${text}": ${why} (expected HOST_PATH|NAME:CONTAINER_PATH[:ro|rw])`,
      {
        value: text,
      },
    );
  if (parts.length < 2 || parts.length > 3) throw bad("wrong number of ':'-separated fields");
  const [source, target, mode] = parts as [string, string, string | undefined];
  if (source === "") throw bad("empty source");
  if (!isAbsolute(target) || target === "/") throw bad("the container path must be absolute and not /");
  if (mode !== undefined && mode !== "ro" && mode !== "rw") throw bad(`unknown mode "${mode}"`);
  const named = !isAbsolute(source);
  if (named && !VOLUME_NAME_RE.test(source))
    throw bad(`"${source}" is neither an absolute path nor a volume name`);
  return { source, named, target, readonly: mode === "ro" };
}

export interface PortSpec {
  hostIp: string;
  hostPort: number;
  containerPort: number;
  protocol: "tcp" | "udp";
}

function port(text: string, whole: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) {
    throw new UsageError("BAD_PORT", `invalid -p "${whole}": "${text}" is not a port number 1-65535`, {
      value: whole,
    });
  }
  return n;
}

/** `[IP:]HOST:CONTAINER[/tcp|/udp]` (docker's form; tcp when no protocol is given). */
export function parsePort(text: string): PortSpec {
  const slash = text.lastIndexOf("/");
  const body = slash < 0 ? text : text.slice(0, slash);
  const proto = slash < 0 ? "tcp" : text.slice(slash + 1);
  if (proto !== "tcp" && proto !== "udp") {
    throw new UsageError(
      "BAD_PORT",
      `invalid -p "${text}": unknown protocol "${proto}" (tcp and udp ports can be published)`,
      { value: text },
    );
  }
  const protocol: PortSpec["protocol"] = proto;
  const parts = body.split(":");
  if (parts.length === 2)
    return {
      hostIp: "0.0.0.0",
      hostPort: port(parts[0]!, text),
      containerPort: port(parts[1]!, text),
      protocol,
    };
  if (parts.length === 3) {
    const ip = parts[0]!;
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip) || ip.split(".").some((b) => Number(b) > 255)) {
      throw new UsageError("BAD_PORT", `invalid -p "${text}": "${ip}" is not an IPv4 address`, {
        value: text,
      });
    }
    return {
      hostIp: ip,
      hostPort: port(parts[1]!, text),
      containerPort: port(parts[2]!, text),
      protocol,
    };
  }
  throw new UsageError(
    "BAD_PORT",
    `invalid -p "${text}" (expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp])`,
    { value: text },
  );
}

/** `KEY=VALUE`, or `KEY` alone to pass the caller's value through (as docker does). */
export function parseEnv(text: string, from: NodeJS.ProcessEnv = process.env): string | undefined {
  const eq = text.indexOf("=");
  const key = eq < 0 ? text : text.slice(0, eq);
  if (!/^[^=\s]+$/.test(key))
    throw new UsageError("BAD_ENV", `invalid environment variable "${text}"`, { value: text });
  if (eq >= 0) return text;
  const v = from[key];
  return v === undefined ? undefined : `${key}=${v}`;
}

export function readEnvFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError("BAD_ENV", `cannot read --env-file "${path}": ${(err as Error).message}`, { path });
  }
  const out: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const v = parseEnv(line);
    if (v !== undefined) out.push(v);
  }
  return out;
}

/** Merges env lists: later entries replace earlier ones with the same key. */
export function mergeEnv(...lists: string[][]): string[] {
  const map = new Map<string, string>();
  for (const list of lists) {
    for (const e of list) {
      const eq = e.indexOf("=");
      map.set(eq < 0 ? e : e.slice(0, eq), e);
    }
  }
  return [...map.values()];
}

/** `512m`, `1g`, `1048576`, `64k`, `1.5g` → bytes. */
export function parseBytes(text: string, flag = "--memory"): number {
  const m = /^(\d+(?:\.\d+)?)([bkmg]?)b?$/i.exec(text.trim());
  if (!m)
    throw new UsageError("BAD_SIZE", `invalid ${flag} "${text}" (expected a number with b, k, m or g)`, {
      value: text,
    });
  const mult = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[
    m[2]!.toLowerCase() as "" | "b" | "k" | "m" | "g"
  ];
  const bytes = Math.floor(Number(m[1]) * mult);
  if (bytes < 6 * 1024 * 1024) {
    throw new UsageError("BAD_SIZE", `${flag} "${text}" is below the minimum of 6m`, { value: text });
  }
  return bytes;
}

export function parseCpus(text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0 || n > 1024) {
    throw new UsageError(
      "BAD_CPUS",
      `invalid --cpus "${text}" (expected a positive number such as 0.5 or 2)`,
      { value: text },
    );
  }
  return n;
}

export interface RestartPolicy {
  name: "no" | "on-failure" | "always";
  maxRetries: number;
}

export function parseRestart(text: string): RestartPolicy {
  const [name, max] = text.split(":");
  if (name === "no" && max === undefined) return { name: "no", maxRetries: 0 };
  if (name === "always" && max === undefined) return { name: "always", maxRetries: 0 };
  if (name === "on-failure") {
    if (max === undefined) return { name, maxRetries: 0 };
    if (/^\d+$/.test(max)) return { name, maxRetries: Number(max) };
  }
  throw new UsageError(
    "BAD_RESTART",
    `invalid --restart "${text}" (expected no, always or on-failure[:MAX])`,
    {
      value: text,
    },
  );
}

/** One of the built-in networks (bridge, host, none) or the name of a user network. */
export type NetworkMode = "bridge" | "host" | "none" | (string & {});

const NETWORK_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/**
 * `--network`: a built-in mode or a name of the form networks have; whether a user network of
 * that name exists is checked by Manager.create.
 */
export function parseNetwork(text: string): NetworkMode {
  if (NETWORK_NAME_RE.test(text)) return text;
  throw new UsageError(
    "BAD_NETWORK",
    `invalid --network "${text}" (expected bridge, host, none or the name of a network from \`vessel network ls\`)`,
    { value: text },
  );
}
