import { UsageError } from "../../errors.js";

/**
 * docker's detach keys (`--detach-keys`, moby/term's ToBytes): a comma-separated list of keys,
 * each a single character or `ctrl-<value>` with <value> one of a-z, @, [, \, ], ^, _ (the
 * control codes 0x00-0x1f). Typing the whole sequence detaches; a partial match is held back
 * and sent to the container as soon as the next byte breaks it.
 */

export const DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q";

const SYNTAX =
  'a comma-separated list of single characters and ctrl-<value>, <value> one of a-z @ [ \\ ] ^ _ (e.g. "ctrl-p,ctrl-q" or "ctrl-a,x")';

/** The bytes of a detach key string; UsageError quoting it and the syntax when it cannot be parsed. */
export function parseDetachKeys(text: string): Buffer {
  const bad = (why: string) =>
    new UsageError("BAD_DETACH_KEYS", `invalid --detach-keys "${text}": ${why}; expected ${SYNTAX}`, {
      value: text,
    });
  if (text === "") throw bad("empty");
  const codes: number[] = [];
  for (const key of text.split(",")) {
    if (key.length === 1) {
      codes.push(key.charCodeAt(0));
      continue;
    }
    const m = /^ctrl-(.)$/i.exec(key);
    if (m === null) throw bad(key === "" ? "an empty key" : `unknown key "${key}"`);
    const c = m[1]!.toLowerCase();
    // ctrl-X is X's code with bits 5 and 6 cleared (the terminal's own rule): a-z -> 0x01-0x1a
    const code = /[a-z@[\\\]^_]/.test(c) ? c.toUpperCase().charCodeAt(0) & 0x1f : -1;
    if (code < 0) throw bad(`unknown key "${key}"`);
    codes.push(code);
  }
  if (codes.some((b) => b > 0x7f)) throw bad("only ASCII keys can be used");
  return Buffer.from(codes);
}

/**
 * Watches a stream of typed bytes for the detach sequence: feed() returns what to pass on to the
 * container now and whether the sequence was completed (the sequence itself is never passed on).
 */
export class DetachKeyMatcher {
  private held = 0;

  constructor(private readonly keys: Buffer) {}

  feed(input: Buffer): { forward: Buffer; detached: boolean } {
    const out: number[] = [];
    for (const b of input) {
      if (b === this.keys[this.held]) {
        this.held++;
        if (this.held === this.keys.length) {
          this.held = 0;
          return { forward: Buffer.from(out), detached: true };
        }
        continue;
      }
      // a broken partial match: the held keys were typed for the container after all
      for (let i = 0; i < this.held; i++) out.push(this.keys[i]!);
      this.held = 0;
      if (b === this.keys[0]) this.held = 1;
      else out.push(b);
    }
    return { forward: Buffer.from(out), detached: false };
  }
}
