import { existsSync, readFileSync } from "node:fs";
import { join, posix } from "node:path";

/**
 * `.dockerignore`: which files of the build context COPY and ADD do not see. The syntax is
 * docker's (moby/patternmatcher, as the Dockerfile reference's ".dockerignore file" describes):
 * - one pattern a line, `#` starts a comment line, surrounding blanks are dropped, each pattern is
 *   cleaned as a path (`./a/` is `a`, a leading `/` means the context's root, as any pattern does);
 * - Go's filepath.Match syntax (`*` and `?` stop at `/`, `[a-z]` and `[^a]` classes, `\` escapes)
 *   plus `**`, any number of directories, zero included (`**` at the end matches everything below);
 * - a pattern that matches a directory excludes everything under it;
 * - `!` makes an exception, and the last pattern that matches a path decides.
 */

interface Pattern {
  text: string;
  exception: boolean;
  re: RegExp;
}

/** The regular expression of one pattern, as patternmatcher compiles it. */
export function compilePattern(pattern: string): RegExp {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === "*") {
      if (pattern[i + 1] === "*") {
        i++;
        if (pattern[i + 1] === "/") i++;
        re += i + 1 >= pattern.length ? ".*" : "(.*/)?";
      } else re += "[^/]*";
    } else if (ch === "?") re += "[^/]";
    else if (ch === "\\") {
      const next = pattern[++i];
      re += next === undefined ? "\\\\" : `\\${next}`;
    } else if (ch === "[") {
      const close = pattern.indexOf("]", i + 2);
      if (close < 0) re += "\\[";
      else {
        re += `[${pattern.slice(i + 1, close)}]`;
        i = close;
      }
    } else re += ch.replace(/[.+^${}()|\]]/g, "\\$&");
  }
  return new RegExp(`${re}$`);
}

/** posix.normalize, then without the leading `/` or `./` and the trailing `/`. */
function clean(p: string): string {
  const n = posix.normalize(p).replace(/^\/+/, "").replace(/\/+$/, "");
  return n === "." ? "" : n;
}

export class DockerIgnore {
  private readonly patterns: Pattern[];

  constructor(lines: string[]) {
    this.patterns = [];
    for (const raw of lines) {
      let text = raw.trim();
      if (text === "" || text.startsWith("#")) continue;
      const exception = text.startsWith("!");
      if (exception) text = text.slice(1).trim();
      text = clean(text);
      if (text === "") continue;
      this.patterns.push({ text, exception, re: compilePattern(text) });
    }
  }

  /** The context's `.dockerignore`, or one that ignores nothing. */
  static forContext(context: string): DockerIgnore {
    const path = join(context, ".dockerignore");
    return new DockerIgnore(existsSync(path) ? readFileSync(path, "utf8").split(/\r?\n/) : []);
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** Whether some `!` pattern could keep something inside an excluded directory. */
  get hasExceptions(): boolean {
    return this.patterns.some((p) => p.exception);
  }

  /**
   * Whether `rel` (a path relative to the context, `/`-separated) is excluded: the last pattern
   * that matches it or one of its parent directories decides.
   */
  excludes(rel: string): boolean {
    const path = clean(rel);
    if (path === "") return false;
    const parts = path.split("/");
    let excluded = false;
    for (const p of this.patterns) {
      let hit = p.re.test(path);
      for (let i = 1; !hit && i < parts.length; i++) hit = p.re.test(parts.slice(0, i).join("/"));
      if (hit) excluded = !p.exception;
    }
    return excluded;
  }
}
