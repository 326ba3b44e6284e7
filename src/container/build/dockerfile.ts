import { ImageError } from "../image/errors.js";
import { hostArchitecture } from "../image/oci_types.js";

/**
 * A parser for the build-file instructions people use most (Dockerfile reference: FROM, RUN, COPY,
 * ADD, ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, LABEL, HEALTHCHECK, STOPSIGNAL):
 * comments, `\` line continuations, JSON (exec) and shell forms, and `$VAR` / `${VAR}` /
 * `${VAR:-default}` / `${VAR:+alt}` substitution in the instructions that take it.
 *
 * Stages (Dockerfile reference, "Multi-stage builds"): every FROM opens a stage, `AS name` names
 * it, and a later FROM or `COPY --from=` names a stage by name or index. ARG scopes as docker's
 * do ("Understand how ARG and FROM interact", "Scope"): an ARG before the first FROM is seen only
 * by FROM lines, unless a stage declares it again (`ARG NAME` takes the global value); an ARG in
 * a stage is seen from its line to the end of that stage; ENV wins over an ARG of the same name.
 */

export type Instruction =
  | { kind: "FROM"; line: number; text: string; image: string; alias?: string }
  | { kind: "HEALTHCHECK"; line: number; text: string; health: HealthConfig }
  | { kind: "STOPSIGNAL"; line: number; text: string; value: string }
  | { kind: "RUN"; line: number; text: string; shell: boolean; args: string[] }
  | {
      kind: "COPY" | "ADD";
      line: number;
      text: string;
      sources: string[];
      dest: string;
      chown?: string;
      chmod?: string;
      /** COPY --from: a stage name, a stage index, or an image. */
      from?: string;
    }
  | { kind: "ENV" | "LABEL"; line: number; text: string; pairs: [string, string][] }
  | { kind: "ARG"; line: number; text: string; name: string; value?: string }
  | { kind: "WORKDIR" | "USER"; line: number; text: string; value: string }
  | { kind: "CMD" | "ENTRYPOINT"; line: number; text: string; shell: boolean; args: string[] }
  | { kind: "EXPOSE"; line: number; text: string; ports: string[] };

const KNOWN = [
  "FROM",
  "RUN",
  "COPY",
  "ADD",
  "ENV",
  "ARG",
  "WORKDIR",
  "USER",
  "CMD",
  "ENTRYPOINT",
  "EXPOSE",
  "LABEL",
  "HEALTHCHECK",
  "STOPSIGNAL",
];

/**
 * The image config's Healthcheck (docker's image spec v1.2 `Healthcheck`, which OCI config.md
 * leaves to implementations): Test is ["NONE"], ["CMD", arg...] or ["CMD-SHELL", command];
 * durations in nanoseconds; 0 means docker's default (30 s, 30 s, 0 s, 3 retries).
 */
export interface HealthConfig {
  Test: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

/** Go's time.ParseDuration as docker reads --interval: "30s", "1m30s", "500ms", "1h". */
export function parseDuration(text: string): number | undefined {
  if (text === "0") return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  const unit: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let total = 0;
  let end = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * unit[m[2]!]!;
    end = re.lastIndex;
  }
  return end === text.length && end > 0 ? Math.round(total) : undefined;
}

export function fail(line: number, msg: string): ImageError {
  return new ImageError("BUILD_FILE", `build file line ${line}: ${msg}`, { line });
}

/** Joins continuation lines; returns [first line number, logical line] pairs. */
export function logicalLines(text: string): [number, string][] {
  const out: [number, string][] = [];
  let cur = "";
  let start = 0;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const trimmed = raw.trim();
    if (cur === "" && (trimmed === "" || trimmed.startsWith("#"))) return;
    if (cur !== "" && trimmed.startsWith("#")) return; // comments inside a continuation are dropped
    if (cur === "") start = i + 1;
    if (/\\\s*$/.test(raw)) {
      cur += `${raw.replace(/\\\s*$/, "")}`;
      return;
    }
    cur += raw;
    out.push([start, cur.trim()]);
    cur = "";
  });
  if (cur.trim() !== "") out.push([start, cur.trim()]);
  return out;
}

export function substitute(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(
    /\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (m, braced, op, word, bare) => {
      if (m === "\\$") return "$";
      const name = (braced ?? bare) as string;
      const v = vars.get(name);
      if (op === "-") return v !== undefined && v !== "" ? v : (word as string);
      if (op === "+") return v !== undefined && v !== "" ? (word as string) : "";
      return v ?? "";
    },
  );
}

function jsonForm(rest: string): string[] | undefined {
  if (!rest.startsWith("[")) return undefined;
  try {
    const v = JSON.parse(rest) as unknown;
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
  } catch {
    // not JSON: shell form, as docker does
  }
  return undefined;
}

/** Splits `a "b c" d\ e` into words (for COPY, EXPOSE and key=value lists). */
export function words(text: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|((?:[^\s"'\\]|\\.)+)/g;
  let cur = "";
  let last = -1;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const piece =
      m[1] !== undefined
        ? m[1].replace(/\\(.)/g, "$1")
        : m[2] !== undefined
          ? m[2]
          : m[3]!.replace(/\\(.)/g, "$1");
    if (last === m.index) cur += piece;
    else {
      if (last !== -1) out.push(cur);
      cur = piece;
    }
    last = m.index + m[0].length;
  }
  if (last !== -1) out.push(cur);
  return out;
}

function pairs(kind: string, line: number, rest: string): [string, string][] {
  const ws = words(rest);
  if (ws.length === 0) throw fail(line, `${kind} needs arguments`);
  if (!ws[0]!.includes("=")) {
    // legacy form: ENV KEY value with spaces
    const sp = rest.search(/\s/);
    if (sp < 0) throw fail(line, `${kind} ${rest}: expected KEY=VALUE or KEY VALUE`);
    return [[rest.slice(0, sp), rest.slice(sp).trim()]];
  }
  return ws.map((w) => {
    const eq = w.indexOf("=");
    if (eq <= 0) throw fail(line, `${kind}: "${w}" is not KEY=VALUE`);
    return [w.slice(0, eq), w.slice(eq + 1)];
  });
}

/** One stage: its FROM and the instructions after it, up to the next FROM. */
export interface Stage {
  index: number;
  /** `AS name`, lower-cased as docker compares stage names. */
  name?: string;
  from: Extract<Instruction, { kind: "FROM" }>;
  steps: Instruction[];
}

export interface BuildFile {
  /** ARG lines before the first FROM. */
  globalArgs: Extract<Instruction, { kind: "ARG" }>[];
  stages: Stage[];
}

function parseHealthcheck(line: number, raw: string): HealthConfig {
  let rest = raw;
  const health: HealthConfig = { Test: [] };
  for (let m = /^--([a-z-]+)=(\S*)\s+/.exec(rest); m !== null; m = /^--([a-z-]+)=(\S*)\s+/.exec(rest)) {
    rest = rest.slice(m[0].length);
    const [, flag, value] = m as unknown as [string, string, string];
    if (flag === "retries") {
      if (!/^\d+$/.test(value)) throw fail(line, `HEALTHCHECK --retries=${value}: expected a whole number`);
      health.Retries = Number(value);
      continue;
    }
    const key = (
      {
        interval: "Interval",
        timeout: "Timeout",
        "start-period": "StartPeriod",
        "start-interval": "StartInterval",
      } as const
    )[flag];
    if (key === undefined)
      throw fail(
        line,
        `HEALTHCHECK: unknown flag --${flag} (supported: --interval, --timeout, --start-period, --start-interval, --retries)`,
      );
    const ns = parseDuration(value);
    if (ns === undefined)
      throw fail(line, `HEALTHCHECK --${flag}=${value}: expected a duration such as 30s or 1m30s`);
    if (ns !== 0 && ns < 1e6) throw fail(line, `HEALTHCHECK --${flag}=${value}: below the minimum of 1ms`);
    health[key] = ns;
  }
  const m = /^(\S+)\s*(.*)$/s.exec(rest.trim());
  const what = m?.[1]?.toUpperCase();
  if (what === "NONE") {
    if (m![2] !== "" || raw.trim().toUpperCase() !== "NONE")
      throw fail(line, "HEALTHCHECK NONE takes no options or arguments");
    return { Test: ["NONE"] };
  }
  if (what !== "CMD" || m![2] === "")
    throw fail(
      line,
      "expected HEALTHCHECK [--interval=D --timeout=D --start-period=D --retries=N] CMD command, or HEALTHCHECK NONE",
    );
  const json = jsonForm(m![2]!);
  health.Test = json ? ["CMD", ...json] : ["CMD-SHELL", m![2]!];
  return health;
}

/**
 * Parses a build file into its stages. ARG and ENV values are substituted in later instructions
 * as they are met (build args given on the command line override ARG defaults). Stage references
 * (FROM a stage, COPY --from) are checked here: an index must name an earlier stage; names that
 * are not stages are images, looked up when the build starts.
 */
export function parseStages(text: string, buildArgs: ReadonlyMap<string, string> = new Map()): BuildFile {
  const globals = new Map<string, string>();
  const globalArgs: BuildFile["globalArgs"] = [];
  const stages: Stage[] = [];
  let vars = new Map<string, string>();
  let envNames = new Set<string>();
  let stage: Stage | undefined;
  for (const [line, logical] of logicalLines(text)) {
    const m = /^(\S+)\s*(.*)$/s.exec(logical);
    if (!m) continue;
    const kind = m[1]!.toUpperCase();
    const raw = m[2]!.trim();
    if (!KNOWN.includes(kind))
      throw fail(line, `unknown instruction "${m[1]}" (supported: ${KNOWN.join(", ")})`);
    if (stage === undefined && kind !== "FROM" && kind !== "ARG")
      throw fail(line, `the first instruction must be FROM (or ARG), not ${kind}`);
    const sub = (s: string) => substitute(s, vars);
    const text = `${kind} ${raw}`;
    let ins: Instruction;
    switch (kind) {
      case "FROM": {
        const ws = words(substitute(raw, globals));
        // --platform=$BUILDPLATFORM and the host's own platform are the host's: nothing to do
        const platform = ws[0]?.startsWith("--platform=") ? ws.shift()!.slice(11) : undefined;
        if (platform !== undefined && platform !== "" && platform !== `linux/${hostArchitecture()}`)
          throw fail(
            line,
            `FROM --platform=${platform}: only this host's platform (linux/${hostArchitecture()}) is built here`,
          );
        if (ws.length !== 1 && !(ws.length === 3 && ws[1]!.toUpperCase() === "AS"))
          throw fail(line, "expected FROM IMAGE [AS NAME]");
        if (ws[0] === "") throw fail(line, `FROM ${raw}: the image name is empty (an ARG with no value?)`);
        const alias = ws[2]?.toLowerCase();
        if (alias !== undefined) {
          if (!/^[a-z][a-z0-9_.-]*$/.test(alias))
            throw fail(line, `bad stage name "${ws[2]}": use a letter, then letters, digits, _ . -`);
          const twin = stages.find((s) => s.name === alias);
          if (twin)
            throw fail(line, `stage name "${alias}" is already used by the stage at line ${twin.from.line}`);
        }
        const from = { kind, line, text, image: ws[0]!, ...(alias ? { alias } : {}) } as const;
        stage = { index: stages.length, ...(alias ? { name: alias } : {}), from, steps: [] };
        stages.push(stage);
        vars = new Map();
        envNames = new Set();
        continue;
      }
      case "RUN":
      case "CMD":
      case "ENTRYPOINT": {
        if (raw === "") throw fail(line, `${kind} needs a command`);
        const json = jsonForm(raw);
        ins = { kind, line, text, shell: json === undefined, args: json ?? [raw] };
        break;
      }
      case "COPY":
      case "ADD": {
        let ws = words(sub(raw));
        let chown: string | undefined;
        let chmod: string | undefined;
        let from: string | undefined;
        while (ws[0]?.startsWith("--")) {
          const flag = ws.shift()!;
          if (flag.startsWith("--chown=")) chown = flag.slice(8);
          else if (flag.startsWith("--chmod=")) {
            chmod = flag.slice(8);
            if (!/^[0-7]{3,4}$/.test(chmod))
              throw fail(line, `${kind} --chmod=${chmod}: expected octal digits such as 755`);
          } else if (flag.startsWith("--from=") && kind === "COPY") {
            from = flag.slice(7);
            if (from === "") throw fail(line, "COPY --from= needs a stage name, a stage index or an image");
          } else throw fail(line, `${kind}: unsupported flag ${flag}`);
        }
        const json = jsonForm(sub(raw).replace(/^(--\S+\s+)+/, ""));
        if (json) ws = json;
        if (ws.length < 2) throw fail(line, `${kind} needs at least one source and a destination`);
        for (const s of ws.slice(0, -1)) {
          if (/^[a-z]+:\/\//.test(s))
            throw fail(line, `${kind} of a URL ("${s}") is not supported: no network fetches during builds`);
        }
        if (from !== undefined && /^\d+$/.test(from) && Number(from) >= stages.length - 1)
          throw fail(
            line,
            `COPY --from=${from}: stage index ${from} is not an earlier stage (this is stage ${stages.length - 1}; indexes count from 0)`,
          );
        ins = {
          kind,
          line,
          text,
          sources: ws.slice(0, -1),
          dest: ws.at(-1)!,
          ...(chown ? { chown } : {}),
          ...(chmod ? { chmod } : {}),
          ...(from !== undefined ? { from } : {}),
        };
        break;
      }
      case "ENV":
      case "LABEL": {
        const ps = pairs(kind, line, sub(raw)).map(([k, v]) => [k, v] as [string, string]);
        if (kind === "ENV")
          for (const [k, v] of ps) {
            vars.set(k, v);
            envNames.add(k);
          }
        ins = { kind, line, text, pairs: ps };
        break;
      }
      case "ARG": {
        const eq = raw.indexOf("=");
        const name = eq < 0 ? raw : raw.slice(0, eq);
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw fail(line, `bad ARG name "${name}"`);
        const scope = stage === undefined ? globals : vars;
        const def = eq < 0 ? undefined : (words(substitute(raw.slice(eq + 1), scope))[0] ?? "");
        // in a stage, `ARG NAME` without a default takes the global ARG's value
        const value = buildArgs.get(name) ?? def ?? (stage !== undefined ? globals.get(name) : undefined);
        const arg = { kind, line, text, name, ...(value !== undefined ? { value } : {}) } as const;
        if (stage === undefined) {
          if (value !== undefined) globals.set(name, value);
          globalArgs.push(arg);
          continue;
        }
        if (value !== undefined && !envNames.has(name)) vars.set(name, value);
        ins = arg;
        break;
      }
      case "WORKDIR":
      case "USER":
      case "STOPSIGNAL": {
        const v = sub(raw).trim();
        if (v === "") throw fail(line, `${kind} needs a value`);
        ins = { kind, line, text, value: v };
        break;
      }
      case "EXPOSE": {
        const ports = words(sub(raw));
        for (const p of ports)
          if (!/^\d+(\/(tcp|udp))?$/.test(p)) throw fail(line, `EXPOSE: "${p}" is not PORT[/tcp|udp]`);
        ins = { kind, line, text, ports };
        break;
      }
      case "HEALTHCHECK":
        ins = { kind, line, text, health: parseHealthcheck(line, raw) };
        break;
      default:
        throw fail(line, `unknown instruction "${m[1]}"`);
    }
    stage!.steps.push(ins);
  }
  if (stages.length === 0) throw fail(1, "the build file has no FROM instruction");
  return { globalArgs, stages };
}

/** Parses a build file into one list of instructions, in file order (global ARGs, then stages). */
export function parseBuildFile(
  text: string,
  buildArgs: ReadonlyMap<string, string> = new Map(),
): Instruction[] {
  const file = parseStages(text, buildArgs);
  return [...file.globalArgs, ...file.stages.flatMap((s) => [s.from, ...s.steps])];
}

/** What a stage needs first: another stage (by index) or an image, and the line that says so. */
export type StageRef = { stage: number; line: number } | { image: string; line: number };

/** The stage a FROM or COPY --from names, else the image it names (docker: a stage name wins). */
export function stageRef(file: BuildFile, ref: string, line: number): StageRef {
  if (/^\d+$/.test(ref) && Number(ref) < file.stages.length) return { stage: Number(ref), line };
  const named = file.stages.find((s) => s.name !== undefined && s.name === ref.toLowerCase());
  return named ? { stage: named.index, line } : { image: ref, line };
}

/** The stages and images that stage `index` uses, in the order its lines name them. */
export function stageDeps(file: BuildFile, index: number): StageRef[] {
  const st = file.stages[index]!;
  const out: StageRef[] = [];
  // FROM names a stage by name only (docker has no FROM <index>); any stage, so that two stages
  // built FROM each other are reported as the cycle they are rather than as missing images
  const named = file.stages.find((s) => s.name !== undefined && s.name === st.from.image.toLowerCase());
  out.push(named ? { stage: named.index, line: st.from.line } : { image: st.from.image, line: st.from.line });
  for (const s of st.steps)
    if ((s.kind === "COPY" || s.kind === "ADD") && s.from !== undefined)
      out.push(stageRef(file, s.from, s.line));
  return out;
}

/**
 * The stages to build for `target` (a stage name, default the last stage), dependencies first,
 * each once. Throws, naming the line, when stages depend on each other in a cycle; and naming the
 * stages there are when `target` is not one of them.
 */
export function stageOrder(file: BuildFile, target?: string): number[] {
  let goal = file.stages.length - 1;
  if (target !== undefined) {
    const t = file.stages.find((s) => s.name === target.toLowerCase());
    if (t === undefined) {
      const names = file.stages.filter((s) => s.name).map((s) => s.name);
      throw new ImageError(
        "BUILD_FILE",
        `--target ${target}: the build file has no stage named "${target}" (${names.length ? `its stages: ${names.join(", ")}` : "it names no stage: use FROM IMAGE AS NAME"})`,
        { target },
      );
    }
    goal = t.index;
  }
  const order: number[] = [];
  const state = new Map<number, "visiting" | "done">();
  const name = (i: number) => file.stages[i]!.name ?? String(i);
  const visit = (i: number, path: number[]) => {
    if (state.get(i) === "done") return;
    state.set(i, "visiting");
    for (const dep of stageDeps(file, i)) {
      if (!("stage" in dep)) continue;
      if (state.get(dep.stage) === "visiting") {
        const chain = [...path, i];
        const cycle = [...chain.slice(chain.indexOf(dep.stage)), dep.stage].map(name);
        throw fail(
          dep.line,
          `the stages form a cycle (${cycle.length === 2 ? `stage "${cycle[0]}" uses itself` : cycle.join(" -> ")}): a stage can only use stages that do not use it`,
        );
      }
      visit(dep.stage, [...path, i]);
    }
    state.set(i, "done");
    order.push(i);
  };
  visit(goal, []);
  return order;
}
