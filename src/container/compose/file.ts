import { existsSync, readFileSync } from "node:fs";
import { basename, isAbsolute, join, resolve } from "node:path";
import { isMap, isScalar, isSeq, LineCounter, type Node, type Pair, parseDocument, type YAMLMap } from "yaml";
import { type HealthConfig, parseDuration, words } from "../build/dockerfile.js";
import { ComposeError } from "./errors.js";

/**
 * A compose file (the Compose Specification, compose-spec.io) read into a checked model, for the
 * subset `vessel compose` runs: services with `image` or `build` (context, dockerfile, args,
 * target), `ports`, `volumes` (bind and named), `environment` (list or map), `env_file`,
 * `command`, `entrypoint`, `depends_on` (list, or map with conditions), `restart`,
 * `container_name`, `working_dir`, `user`, `hostname`, `labels`, `expose`, `healthcheck`; top-level `name`,
 * `services`, `volumes` and the obsolete `version`.
 *
 * Parsing is the `yaml` library's (YAML 1.2, duplicate keys refused); every node keeps its
 * position, so any error names the key path and its line. A key outside the subset is an
 * error, not silently ignored: a file that asks for something Vessel would not do must not
 * start half-right. Values are interpolated as compose does (`$VAR`, `${VAR}`, `${VAR:-x}`,
 * `${VAR-x}`, `${VAR:?msg}`, `$$` for a dollar) from the environment, then the project's `.env`.
 */

export type DependCondition = "service_started" | "service_healthy" | "service_completed_successfully";

export interface ServiceBuild {
  /** Absolute path of the build context. */
  context: string;
  /** Absolute path of the build file, when not the context's Dockerfile. */
  dockerfile?: string;
  args: Record<string, string>;
  target?: string;
}

export interface ServicePort {
  /** `-p` syntax: [IP:]HOST:CONTAINER[/PROTO]. */
  spec: string;
  hostIp: string;
  hostPort: number;
  containerPort: number;
  protocol: string;
  line: number;
}

export interface ServiceVolume {
  /** An absolute host path (bind) or a volume's name as written in the file (named). */
  source: string;
  named: boolean;
  target: string;
  readonly: boolean;
  line: number;
}

export interface ComposeService {
  name: string;
  line: number;
  image?: string;
  build?: ServiceBuild;
  ports: ServicePort[];
  volumes: ServiceVolume[];
  /** KEY=VALUE; a key without a value takes the caller's, as `docker run -e KEY` does. */
  environment: string[];
  envFiles: string[];
  command?: string[];
  entrypoint?: string[];
  dependsOn: { service: string; condition: DependCondition; line: number }[];
  restart?: string;
  containerName?: string;
  workingDir?: string;
  user?: string;
  hostname?: string;
  labels: Record<string, string>;
  /** Replaces the image's HEALTHCHECK (`disable: true` is `["NONE"]`). */
  healthcheck?: HealthConfig;
}

export interface ComposeFile {
  path: string;
  /** The project directory: the file's directory. */
  dir: string;
  /** `name:` from the file, when given. */
  name?: string;
  /** In file order. */
  services: ComposeService[];
  /** Named volumes declared at the top level. */
  volumes: string[];
}

const TOP_KEYS = ["version", "name", "services", "volumes"];
const SERVICE_KEYS = [
  "image",
  "build",
  "ports",
  "volumes",
  "environment",
  "env_file",
  "command",
  "entrypoint",
  "depends_on",
  "restart",
  "container_name",
  "working_dir",
  "user",
  "hostname",
  "labels",
  "expose",
  "healthcheck",
];
const HEALTH_KEYS = ["test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"];
const BUILD_KEYS = ["context", "dockerfile", "args", "target"];
const PORT_KEYS = ["target", "published", "host_ip", "protocol", "mode"];
const VOLUME_KEYS = ["type", "source", "target", "read_only"];
const DEFAULT_FILES = ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"];

/** The compose file in `dir` by the names compose looks for, first found. */
export function findComposeFile(dir: string): string {
  for (const f of DEFAULT_FILES) if (existsSync(join(dir, f))) return join(dir, f);
  throw new ComposeError(
    "COMPOSE_NO_FILE",
    `no compose file in ${dir} (looked for ${DEFAULT_FILES.join(", ")}); give one with -f FILE`,
    { dir },
  );
}

/** Compose's project name rule: lower case letters, digits, `_` and `-`, starting with a letter or digit. */
export function projectName(raw: string): string {
  const n = raw.toLowerCase().replace(/[^a-z0-9_-]/g, "");
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(n))
    throw new ComposeError(
      "COMPOSE_FILE",
      `"${raw}" cannot be a project name: use lower case letters, digits, "_" and "-", starting with a letter or digit (-p NAME)`,
      { name: raw },
    );
  return n;
}

/** Reads a `.env` file: KEY=VALUE lines, `#` comments, optional quotes around the value. */
export function readDotEnv(path: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(path)) return out;
  for (const raw of readFileSync(path, "utf8").split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!;
    if (/^(["']).*\1$/.test(v)) v = v.slice(1, -1);
    out.set(m[1]!, v);
  }
  return out;
}

class Reader {
  constructor(
    readonly file: string,
    private readonly lc: LineCounter,
    private readonly vars: (name: string) => string | undefined,
  ) {}

  line(node: Node | null | undefined): number {
    const at = node?.range?.[0];
    return at === undefined ? 0 : this.lc.linePos(at).line;
  }

  fail(node: Node | null | undefined, path: string, msg: string): ComposeError {
    const line = this.line(node);
    return new ComposeError("COMPOSE_FILE", `${this.file} line ${line}: ${path}: ${msg}`, {
      file: this.file,
      line,
      key: path,
    });
  }

  /** The pairs of a mapping, each key checked against `allowed`. */
  pairs(node: unknown, path: string, allowed?: string[]): [string, Pair<Node, Node | null>][] {
    if (!isMap(node)) throw this.fail(node as Node, path, "expected a mapping (key: value lines)");
    return (node as YAMLMap<Node, Node | null>).items.map((p) => {
      const key = isScalar(p.key) ? String(p.key.value) : "";
      if (allowed && !allowed.includes(key))
        throw this.fail(
          p.key,
          path === "" ? key : `${path}.${key}`,
          `unknown key "${key}" (${path === "" ? "top level" : path} supports: ${allowed.join(", ")})`,
        );
      return [key, p];
    });
  }

  /** Compose's interpolation of one string value. */
  interpolate(text: string, node: Node | null | undefined, path: string): string {
    return text.replace(
      /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$\{[^}]*\}?/g,
      (m, braced, op, word, bare) => {
        if (m === "$$") return "$";
        const name = (braced ?? bare) as string | undefined;
        if (name === undefined)
          throw this.fail(node, path, `bad substitution "${m}" (write $$ for a dollar sign)`);
        const v = this.vars(name);
        const unsetOrEmpty = v === undefined || (op?.startsWith(":") && v === "");
        switch (op) {
          case ":-":
          case "-":
            return unsetOrEmpty ? (word as string) : v!;
          case ":+":
          case "+":
            return unsetOrEmpty ? "" : (word as string);
          case ":?":
          case "?":
            if (unsetOrEmpty)
              throw this.fail(node, path, `variable ${name} is required: ${word || "it is not set"}`);
            return v!;
          default:
            return v ?? "";
        }
      },
    );
  }

  /** A scalar as a string (numbers and booleans as YAML wrote them), interpolated. */
  str(node: Node | null | undefined, path: string): string {
    if (!isScalar(node) || node.value === null || typeof node.value === "object")
      throw this.fail(node, path, "expected a single value");
    return this.interpolate(String(node.value), node, path);
  }

  /** A string, or a list of strings (`command`, `entrypoint`, `env_file`). */
  strings(node: Node | null | undefined, path: string, split: boolean): string[] {
    if (isSeq(node)) return node.items.map((n, i) => this.str(n as Node, `${path}[${i}]`));
    const s = this.str(node, path);
    return split ? words(s) : [s];
  }

  /** A list of `KEY=VALUE` strings or a mapping; `KEY` alone (or `KEY:` with no value) stays unset. */
  keyValues(node: Node | null | undefined, path: string): [string, string | undefined][] {
    if (isSeq(node))
      return node.items.map((n, i) => {
        const s = this.str(n as Node, `${path}[${i}]`);
        const eq = s.indexOf("=");
        return eq < 0 ? [s, undefined] : [s.slice(0, eq), s.slice(eq + 1)];
      });
    if (isMap(node))
      return this.pairs(node, path).map(([k, p]) => [
        k,
        isScalar(p.value) && p.value.value === null ? undefined : this.str(p.value, `${path}.${k}`),
      ]);
    throw this.fail(node, path, "expected a list of KEY=VALUE or a mapping");
  }
}

/** Parses and checks a compose file's text; `path` locates relative paths and names errors. */
export function parseComposeFile(
  text: string,
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): ComposeFile {
  const dir = resolve(path, "..");
  const dotEnv = readDotEnv(join(dir, ".env"));
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const shown = basename(path);
  const first = doc.errors[0];
  if (first) {
    const line = lc.linePos(first.pos[0]).line;
    throw new ComposeError(
      "COMPOSE_FILE",
      `${shown} line ${line}: not valid YAML: ${first.message.split("\n")[0]}`,
      {
        file: shown,
        line,
      },
    );
  }
  const r = new Reader(shown, lc, (n) => env[n] ?? dotEnv.get(n));
  const out: ComposeFile = { path: resolve(path), dir, services: [], volumes: [] };
  let servicesNode: Node | null = null;
  for (const [key, p] of r.pairs(doc.contents, "", TOP_KEYS)) {
    if (key === "name") out.name = r.str(p.value, "name");
    else if (key === "services") servicesNode = p.value;
    else if (key === "volumes" && p.value !== null && !(isScalar(p.value) && p.value.value === null)) {
      for (const [v, vp] of r.pairs(p.value, "volumes")) {
        if (vp.value !== null && !(isScalar(vp.value) && vp.value.value === null))
          // driver options and external volumes are not in the subset
          r.pairs(vp.value, `volumes.${v}`, []);
        out.volumes.push(v);
      }
    }
  }
  if (servicesNode === null) throw r.fail(doc.contents as Node, "services", "the file has no services");
  for (const [name, p] of r.pairs(servicesNode, "services")) {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name))
      throw r.fail(
        p.key,
        `services.${name}`,
        "a service name is letters, digits, _ . - (starting with a letter or digit)",
      );
    out.services.push(parseService(r, name, p, dir, env, dotEnv));
  }
  if (out.services.length === 0) throw r.fail(servicesNode, "services", "the file has no services");
  checkReferences(r, out);
  return out;
}

function parseService(
  r: Reader,
  name: string,
  pair: Pair<Node, Node | null>,
  dir: string,
  env: NodeJS.ProcessEnv,
  dotEnv: Map<string, string>,
): ComposeService {
  const at = `services.${name}`;
  const svc: ComposeService = {
    name,
    line: r.line(pair.key),
    ports: [],
    volumes: [],
    environment: [],
    envFiles: [],
    dependsOn: [],
    labels: {},
  };
  for (const [key, p] of r.pairs(pair.value, at, SERVICE_KEYS)) {
    const here = `${at}.${key}`;
    const v = p.value;
    switch (key) {
      case "image":
        svc.image = r.str(v, here);
        break;
      case "build":
        svc.build = parseBuild(r, v, here, dir);
        break;
      case "ports":
        if (!isSeq(v)) throw r.fail(v, here, "expected a list of ports");
        svc.ports.push(...v.items.map((n, i) => parsePortItem(r, n as Node, `${here}[${i}]`)));
        break;
      case "volumes":
        if (!isSeq(v)) throw r.fail(v, here, "expected a list of volumes");
        svc.volumes.push(...v.items.map((n, i) => parseVolumeItem(r, n as Node, `${here}[${i}]`, dir)));
        break;
      case "environment":
        for (const [k, val] of r.keyValues(v, here)) {
          const value = val ?? env[k] ?? dotEnv.get(k);
          if (value !== undefined) svc.environment.push(`${k}=${value}`);
        }
        break;
      case "env_file":
        svc.envFiles = r.strings(v, here, false).map((f) => resolve(dir, f));
        for (const f of svc.envFiles)
          if (!existsSync(f)) throw r.fail(v, here, `env file ${f} does not exist`);
        break;
      case "command":
        svc.command = r.strings(v, here, true);
        break;
      case "entrypoint":
        svc.entrypoint = r.strings(v, here, true);
        break;
      case "depends_on":
        if (isSeq(v))
          svc.dependsOn.push(
            ...v.items.map((n, i) => ({
              service: r.str(n as Node, `${here}[${i}]`),
              condition: "service_started" as const,
              line: r.line(n as Node),
            })),
          );
        else
          for (const [dep, dp] of r.pairs(v, here)) {
            let condition: DependCondition = "service_started";
            for (const [ck, cp] of r.pairs(dp.value, `${here}.${dep}`, [
              "condition",
              "restart",
              "required",
            ])) {
              if (ck !== "condition") continue;
              const c = r.str(cp.value, `${here}.${dep}.condition`);
              if (
                c !== "service_started" &&
                c !== "service_healthy" &&
                c !== "service_completed_successfully"
              )
                throw r.fail(
                  cp.value,
                  `${here}.${dep}.condition`,
                  `unknown condition "${c}" (service_started, service_healthy or service_completed_successfully)`,
                );
              condition = c;
            }
            svc.dependsOn.push({ service: dep, condition, line: r.line(dp.key) });
          }
        break;
      case "restart": {
        const s = r.str(v, here);
        if (!/^(no|always|unless-stopped|on-failure(:\d+)?)$/.test(s))
          throw r.fail(
            v,
            here,
            `unknown restart policy "${s}" (no, always, on-failure[:N] or unless-stopped)`,
          );
        svc.restart = s;
        break;
      }
      case "container_name":
        svc.containerName = r.str(v, here);
        break;
      case "working_dir":
        svc.workingDir = r.str(v, here);
        break;
      case "user":
        svc.user = r.str(v, here);
        break;
      case "hostname":
        svc.hostname = r.str(v, here);
        break;
      case "labels":
        for (const [k, val] of r.keyValues(v, here)) svc.labels[k] = val ?? "";
        break;
      case "healthcheck":
        svc.healthcheck = parseHealthcheck(r, v, here);
        break;
      case "expose":
        // documentation between services on one network: every port is reachable there anyway
        r.strings(v, here, false);
        break;
    }
  }
  if (svc.image === undefined && svc.build === undefined)
    throw r.fail(pair.key, at, "a service needs an image or a build");
  return svc;
}

function parseHealthcheck(r: Reader, node: Node | null, at: string): HealthConfig {
  const h: HealthConfig = { Test: [] };
  for (const [key, p] of r.pairs(node, at, HEALTH_KEYS)) {
    const here = `${at}.${key}`;
    if (key === "test") {
      if (isSeq(p.value)) {
        h.Test = r.strings(p.value, here, false);
        if (!["CMD", "CMD-SHELL", "NONE"].includes(h.Test[0] ?? ""))
          throw r.fail(p.value, here, 'a test list starts with "CMD", "CMD-SHELL" or "NONE"');
      } else h.Test = ["CMD-SHELL", r.str(p.value, here)];
    } else if (key === "disable") {
      if (r.str(p.value, here) === "true") return { Test: ["NONE"] };
    } else if (key === "retries") {
      const n = r.str(p.value, here);
      if (!/^\d+$/.test(n)) throw r.fail(p.value, here, `"${n}" is not a whole number`);
      h.Retries = Number(n);
    } else {
      const d = r.str(p.value, here);
      const ns = parseDuration(d);
      if (ns === undefined) throw r.fail(p.value, here, `"${d}" is not a duration such as 10s or 1m30s`);
      const field = ({ interval: "Interval", timeout: "Timeout", start_period: "StartPeriod" } as const)[
        key as "interval"
      ];
      h[field ?? "StartInterval"] = ns;
    }
  }
  if (h.Test.length === 0) throw r.fail(node, at, "a healthcheck needs a test");
  return h;
}

function parseBuild(r: Reader, node: Node | null, at: string, dir: string): ServiceBuild {
  if (!isMap(node)) return { context: resolve(dir, r.str(node, at)), args: {} };
  const b: ServiceBuild = { context: dir, args: {} };
  let dockerfile: string | undefined;
  for (const [key, p] of r.pairs(node, at, BUILD_KEYS)) {
    const here = `${at}.${key}`;
    if (key === "context") b.context = resolve(dir, r.str(p.value, here));
    else if (key === "dockerfile") dockerfile = r.str(p.value, here);
    else if (key === "target") b.target = r.str(p.value, here);
    else if (key === "args")
      for (const [k, v] of r.keyValues(p.value, here)) if (v !== undefined) b.args[k] = v;
  }
  // compose: `dockerfile` is relative to the context
  if (dockerfile !== undefined)
    b.dockerfile = isAbsolute(dockerfile) ? dockerfile : resolve(b.context, dockerfile);
  if (!existsSync(b.context)) throw r.fail(node, at, `the build context ${b.context} does not exist`);
  return b;
}

function portNumber(r: Reader, node: Node, at: string, text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535)
    throw r.fail(node, at, `"${text}" is not a port number 1-65535`);
  return n;
}

function parsePortItem(r: Reader, node: Node, at: string): ServicePort {
  const line = r.line(node);
  let hostIp = "0.0.0.0";
  let host: string | undefined;
  let container: string;
  let protocol = "tcp";
  if (isMap(node)) {
    const f: Record<string, string> = {};
    for (const [k, p] of r.pairs(node, at, PORT_KEYS)) f[k] = r.str(p.value, `${at}.${k}`);
    if (f.target === undefined) throw r.fail(node, at, "a port needs a target (the container's port)");
    if (f.mode !== undefined && f.mode !== "host" && f.mode !== "ingress")
      throw r.fail(node, `${at}.mode`, `unknown mode "${f.mode}"`);
    container = f.target;
    host = f.published;
    hostIp = f.host_ip ?? hostIp;
    protocol = f.protocol ?? protocol;
  } else {
    let s = r.str(node, at);
    const slash = s.lastIndexOf("/");
    if (slash >= 0) {
      protocol = s.slice(slash + 1);
      s = s.slice(0, slash);
    }
    const parts = s.split(":");
    if (parts.length > 3)
      throw r.fail(node, at, `"${s}" is not [IP:]HOST:CONTAINER (IPv6 addresses are not supported)`);
    container = parts.at(-1)!;
    host = parts.length >= 2 ? parts.at(-2) : undefined;
    if (parts.length === 3) hostIp = parts[0]!;
  }
  if (protocol !== "tcp" && protocol !== "udp")
    throw r.fail(node, at, `unknown protocol "${protocol}" (tcp or udp)`);
  if (/-/.test(container) || (host !== undefined && /-/.test(host)))
    throw r.fail(node, at, "port ranges are not supported: list each port");
  if (host === undefined || host === "")
    throw r.fail(
      node,
      at,
      `"${container}" publishes no host port: write HOST:${container} (services on the project's network reach each other's ports without publishing)`,
    );
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(hostIp)) throw r.fail(node, at, `"${hostIp}" is not an IPv4 address`);
  const hostPort = portNumber(r, node, at, host);
  const containerPort = portNumber(r, node, at, container);
  return {
    spec: `${hostIp}:${hostPort}:${containerPort}/${protocol}`,
    hostIp,
    hostPort,
    containerPort,
    protocol,
    line,
  };
}

function parseVolumeItem(r: Reader, node: Node, at: string, dir: string): ServiceVolume {
  let source: string | undefined;
  let target: string | undefined;
  let readonly = false;
  let type: string | undefined;
  if (isMap(node)) {
    for (const [k, p] of r.pairs(node, at, VOLUME_KEYS)) {
      const v = r.str(p.value, `${at}.${k}`);
      if (k === "type") type = v;
      else if (k === "source") source = v;
      else if (k === "target") target = v;
      else if (k === "read_only") readonly = v === "true";
    }
    if (type !== "bind" && type !== "volume")
      throw r.fail(node, `${at}.type`, `type must be bind or volume, not "${type}"`);
  } else {
    const parts = r.str(node, at).split(":");
    if (parts.length < 2 || parts.length > 3)
      throw r.fail(
        node,
        at,
        "expected SOURCE:TARGET[:ro|rw] (anonymous volumes are not supported: name the volume)",
      );
    [source, target] = parts as [string, string];
    const mode = parts[2];
    if (mode !== undefined && mode !== "ro" && mode !== "rw")
      throw r.fail(node, at, `unknown mode "${mode}" (ro or rw)`);
    readonly = mode === "ro";
    type = /^[./~]/.test(source) ? "bind" : "volume";
  }
  if (!source) throw r.fail(node, at, "a volume needs a source");
  if (!target?.startsWith("/") || target === "/")
    throw r.fail(node, at, `the target "${target ?? ""}" must be an absolute path other than /`);
  if (type === "bind") {
    const home = process.env.HOME ?? "/root";
    const abs = source.startsWith("~") ? join(home, source.slice(1)) : resolve(dir, source);
    return { source: abs, named: false, target, readonly, line: r.line(node) };
  }
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(source))
    throw r.fail(node, at, `"${source}" is neither a path (start it with ./ or /) nor a volume name`);
  return { source, named: true, target, readonly, line: r.line(node) };
}

/** Named volumes declared, depends_on naming services, no cycles, no host port twice. */
function checkReferences(r: Reader, f: ComposeFile): void {
  const names = new Set(f.services.map((s) => s.name));
  for (const s of f.services) {
    for (const v of s.volumes)
      if (v.named && !f.volumes.includes(v.source))
        throw lineError(
          r,
          v.line,
          `services.${s.name}.volumes`,
          `volume "${v.source}" is not declared under the top-level volumes: key`,
        );
    for (const d of s.dependsOn)
      if (!names.has(d.service))
        throw lineError(r, d.line, `services.${s.name}.depends_on`, `no service named "${d.service}"`);
  }
  startOrder(f, r);
  const seen = new Map<string, { svc: string; line: number }>();
  for (const s of f.services)
    for (const p of s.ports) {
      // one host port per protocol, on the same address or on 0.0.0.0
      for (const [k, other] of seen) {
        const [ip, port, proto] = k.split("|");
        if (
          Number(port) === p.hostPort &&
          proto === p.protocol &&
          (ip === p.hostIp || ip === "0.0.0.0" || p.hostIp === "0.0.0.0")
        )
          throw new ComposeError(
            "COMPOSE_PORT_CLASH",
            `${basename(f.path)} line ${p.line}: services.${s.name}.ports: host port ${p.hostPort}/${p.protocol} is already published by service "${other.svc}" (line ${other.line}); give one of them another host port`,
            { line: p.line, port: p.hostPort },
          );
      }
      seen.set(`${p.hostIp}|${p.hostPort}|${p.protocol}`, { svc: s.name, line: p.line });
    }
}

function lineError(r: Reader, line: number, key: string, msg: string): ComposeError {
  const file = r.file;
  return new ComposeError("COMPOSE_FILE", `${file} line ${line}: ${key}: ${msg}`, { file, line, key });
}

/**
 * The services in an order that starts each after what it depends on (file order otherwise).
 * A cycle is an error naming the depends_on line that closes it.
 */
export function startOrder(f: ComposeFile, r?: Reader): ComposeService[] {
  const byName = new Map(f.services.map((s) => [s.name, s]));
  const state = new Map<string, "visiting" | "done">();
  const out: ComposeService[] = [];
  const visit = (s: ComposeService, path: string[]) => {
    if (state.get(s.name) === "done") return;
    state.set(s.name, "visiting");
    for (const d of s.dependsOn) {
      const dep = byName.get(d.service);
      if (dep === undefined) continue;
      if (state.get(dep.name) === "visiting") {
        const chain = [...path, s.name];
        const cycle = [...chain.slice(chain.indexOf(dep.name)), dep.name].join(" -> ");
        const msg = `services depend on each other in a cycle (${cycle})`;
        const key = `services.${s.name}.depends_on`;
        throw r
          ? lineError(r, d.line, key, msg)
          : new ComposeError("COMPOSE_FILE", `line ${d.line}: ${key}: ${msg}`, { line: d.line });
      }
      visit(dep, [...path, s.name]);
    }
    state.set(s.name, "done");
    out.push(s);
  };
  for (const s of f.services) visit(s, []);
  return out;
}

/** Reads and parses a compose file from disk. */
export function loadComposeFile(path: string, env: NodeJS.ProcessEnv = process.env): ComposeFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ComposeError(
      "COMPOSE_NO_FILE",
      `cannot read the compose file ${path}: ${(err as Error).message}`,
      {
        path,
      },
    );
  }
  return parseComposeFile(text, path, env);
}
