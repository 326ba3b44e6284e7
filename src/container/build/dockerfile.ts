import { ImageError } from "../image/errors.js";

/**
 * A parser for the build-file instructions people use most (Dockerfile reference: FROM, RUN, COPY,
 * ADD, ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, LABEL): comments, `\` line
 * continuations, JSON (exec) and shell forms, and `$VAR` / `${VAR}` / `${VAR:-default}` /
 * `${VAR:+alt}` substitution in the instructions that take it.
 */

export type Instruction =
  | { kind: "FROM"; line: number; text: string; image: string; alias?: string }
  | { kind: "RUN"; line: number; text: string; shell: boolean; args: string[] }
  | { kind: "COPY" | "ADD"; line: number; text: string; sources: string[]; dest: string; chown?: string }
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
];

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

/**
 * Parses a build file. ARG and ENV values are substituted in later instructions as they are
 * met (build args given on the command line override ARG defaults).
 */
export function parseBuildFile(
  text: string,
  buildArgs: ReadonlyMap<string, string> = new Map(),
): Instruction[] {
  const vars = new Map<string, string>();
  const out: Instruction[] = [];
  for (const [line, logical] of logicalLines(text)) {
    const m = /^(\S+)\s*(.*)$/s.exec(logical);
    if (!m) continue;
    const kind = m[1]!.toUpperCase();
    const raw = m[2]!.trim();
    if (!KNOWN.includes(kind))
      throw fail(line, `unknown instruction "${m[1]}" (supported: ${KNOWN.join(", ")})`);
    if (out.length === 0 && kind !== "FROM" && kind !== "ARG")
      throw fail(line, `the first instruction must be FROM, not ${kind}`);
    const sub = (s: string) => substitute(s, vars);
    const text = `${kind} ${raw}`;
    switch (kind) {
      case "FROM": {
        const ws = words(sub(raw));
        if (ws.length !== 1 && !(ws.length === 3 && ws[1]!.toUpperCase() === "AS"))
          throw fail(line, "expected FROM IMAGE [AS NAME]");
        out.push({ kind, line, text, image: ws[0]!, ...(ws[2] ? { alias: ws[2] } : {}) });
        break;
      }
      case "RUN":
      case "CMD":
      case "ENTRYPOINT": {
        if (raw === "") throw fail(line, `${kind} needs a command`);
        const json = jsonForm(raw);
        out.push({ kind, line, text, shell: json === undefined, args: json ?? [raw] });
        break;
      }
      case "COPY":
      case "ADD": {
        let ws = words(sub(raw));
        let chown: string | undefined;
        while (ws[0]?.startsWith("--")) {
          const flag = ws.shift()!;
          if (flag.startsWith("--chown=")) chown = flag.slice(8);
          else throw fail(line, `${kind}: unsupported flag ${flag}`);
        }
        const json = jsonForm(sub(raw).replace(/^(--\S+\s+)+/, ""));
        if (json) ws = json;
        if (ws.length < 2) throw fail(line, `${kind} needs at least one source and a destination`);
        for (const s of ws.slice(0, -1)) {
          if (/^[a-z]+:\/\//.test(s))
            throw fail(line, `${kind} of a URL ("${s}") is not supported: no network fetches during builds`);
        }
        out.push({
          kind,
          line,
          text,
          sources: ws.slice(0, -1),
          dest: ws.at(-1)!,
          ...(chown ? { chown } : {}),
        });
        break;
      }
      case "ENV":
      case "LABEL": {
        const ps = pairs(kind, line, sub(raw)).map(([k, v]) => [k, v] as [string, string]);
        if (kind === "ENV") for (const [k, v] of ps) vars.set(k, v);
        out.push({ kind, line, text, pairs: ps });
        break;
      }
      case "ARG": {
        const eq = raw.indexOf("=");
        const name = eq < 0 ? raw : raw.slice(0, eq);
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw fail(line, `bad ARG name "${name}"`);
        const def = eq < 0 ? undefined : (words(sub(raw.slice(eq + 1)))[0] ?? "");
        const value = buildArgs.get(name) ?? def;
        if (value !== undefined && !vars.has(name)) vars.set(name, value);
        out.push({ kind, line, text, name, ...(value !== undefined ? { value } : {}) });
        break;
      }
      case "WORKDIR":
      case "USER": {
        const v = sub(raw).trim();
        if (v === "") throw fail(line, `${kind} needs a value`);
        out.push({ kind, line, text, value: v });
        break;
      }
      case "EXPOSE": {
        const ports = words(sub(raw));
        for (const p of ports)
          if (!/^\d+(\/(tcp|udp))?$/.test(p)) throw fail(line, `EXPOSE: "${p}" is not PORT[/tcp|udp]`);
        out.push({ kind, line, text, ports });
        break;
      }
    }
  }
  if (out.length === 0 || !out.some((i) => i.kind === "FROM"))
    throw fail(1, "the build file has no FROM instruction");
  return out;
}
