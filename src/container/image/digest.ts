import { createHash } from "node:crypto";

/** An OCI content digest, always `sha256:<64 lowercase hex>` here (image-spec descriptor.md). */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function isDigest(value: string): value is Digest {
  return DIGEST_RE.test(value);
}

/** The hex part of a digest, used as a file name. */
export function digestHex(d: Digest): string {
  return d.slice("sha256:".length);
}

export function sha256Of(data: Buffer | string): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** First 12 hex digits, as docker shows image and container ids. */
export function shortId(d: Digest | string): string {
  return d.replace(/^sha256:/, "").slice(0, 12);
}
