import { UsageError } from "../errors.js";

/**
 * Docker-style argument parsing for the container and image verbs: flags come before the first
 * positional (the image), everything after it is the container's command, untouched. Short
 * boolean flags combine (`-it`, `-dit`); value flags take `--flag v`, `--flag=v`, `-f v`.
 */

export interface FlagSpec {
  short?: string;
  value?: boolean;
  multi?: boolean;
}

export interface Parsed {
  flags: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function parseDockerArgs(
  args: string[],
  spec: Record<string, FlagSpec>,
  stopAtPositional: boolean,
): Parsed {
  const flags: Parsed["flags"] = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [long, s] of Object.entries(spec)) if (s.short) byShort.set(s.short, long);
  const set = (long: string, v: string | boolean) => {
    const s = spec[long]!;
    if (s.multi) flags[long] = [...((flags[long] as string[] | undefined) ?? []), String(v)];
    else flags[long] = v;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const long = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const s = spec[long];
      if (!s) throw new UsageError("BAD_FLAG", `unknown flag: --${long}`);
      if (s.value) {
        const v = eq >= 0 ? a.slice(eq + 1) : args[++i];
        if (v === undefined) throw new UsageError("BAD_FLAG", `flag --${long} needs a value`);
        set(long, v);
      } else {
        if (eq >= 0) set(long, !["false", "0"].includes(a.slice(eq + 1)));
        else set(long, true);
      }
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const long = byShort.get(a[j]!);
        if (!long) throw new UsageError("BAD_FLAG", `unknown shorthand flag: '${a[j]}' in ${a}`);
        if (spec[long]!.value) {
          const rest = a.slice(j + 1);
          const v = rest !== "" ? rest : args[++i];
          if (v === undefined) throw new UsageError("BAD_FLAG", `flag -${a[j]} needs a value`);
          set(long, v);
          break;
        }
        set(long, true);
      }
      continue;
    }
    positionals.push(a);
    if (stopAtPositional) {
      positionals.push(...args.slice(i + 1));
      break;
    }
  }
  return { flags, positionals };
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.flags[name];
  return typeof v === "string" ? v : undefined;
}

export function list(p: Parsed, name: string): string[] {
  const v = p.flags[name];
  return Array.isArray(v) ? v : [];
}

export function bool(p: Parsed, name: string): boolean {
  return p.flags[name] === true;
}

export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) {
    r.forEach((c, i) => {
      widths[i] = Math.max(widths[i] ?? 0, c.length);
    });
  }
  return `${rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join("")).join("\n")}\n`;
}

export function ago(iso: string | undefined): string {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} seconds ago`;
  if (s < 3600) return `${Math.round(s / 60)} minutes ago`;
  if (s < 86400) return `${Math.round(s / 3600)} hours ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export function humanSize(n: number): string {
  if (!Number.isFinite(n)) return "unlimited";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 && i > 0 ? v.toFixed(2) : v < 100 && i > 0 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}
