import { ImageError } from "./errors.js";

/**
 * Image names as docker spells them: `[host[:port]/]path[:tag]`. Vessel keeps the name as typed
 * plus `:latest` when no tag is given; no registry host is implied (none is reachable here).
 */
const NAME_RE =
  /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;

export function splitName(ref: string): { repository: string; tag: string } {
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  if (colon > slash) return { repository: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repository: ref, tag: "latest" };
}

/** `busybox` → `busybox:latest`; throws on a malformed name. */
export function normalizeName(ref: string): string {
  const { repository, tag } = splitName(ref);
  if (!NAME_RE.test(repository) || !TAG_RE.test(tag)) {
    throw new ImageError(
      "BAD_REFERENCE",
      `invalid image name "${ref}": use lowercase letters, digits, '.', '_', '-' and '/', with an optional :tag`,
      { ref },
    );
  }
  return `${repository}:${tag}`;
}
