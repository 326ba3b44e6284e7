/**
 * The one error family of Vessel. Every module family extends VesselError with its own class and
 * stable `code`s (CONVENTIONS.md, "Errors"): a message that says what was wrong and what to do,
 * the values involved in `details`, and the underlying `cause`.
 */
export class VesselError extends Error {
  readonly code: string;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: string, message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** Bad input from a user: a flag, a file, a config. The CLI prints the message and exits 2. */
export class UsageError extends VesselError {}

/** Formats any thrown value for a person: the message, and the cause chain if there is one. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  let text = err.message;
  let cause = (err as { cause?: unknown }).cause;
  for (let depth = 0; cause !== undefined && depth < 4; depth++) {
    text += `\n  caused by: ${cause instanceof Error ? cause.message : String(cause)}`;
    cause = cause instanceof Error ? (cause as { cause?: unknown }).cause : undefined;
  }
  return text;
}
