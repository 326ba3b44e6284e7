import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { ImageError } from "./errors.js";

/** An OCI content digest, always `sha256:<64 lowercase hex>` here (image-spec descriptor.md). */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function isDigest(value: string): value is Digest {
  return DIGEST_RE.test(value);
}

export function asDigest(value: string): Digest {
  if (!isDigest(value)) {
    throw new ImageError("BAD_BLOB", `"${value}" is not a sha256 digest (expected sha256:<64 hex digits>)`, {
      value,
    });
  }
  return value;
}

/** The hex part of a digest, used as a file name. */
export function digestHex(d: Digest): string {
  return d.slice("sha256:".length);
}

export function sha256Of(data: Buffer | string): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export async function sha256File(path: string): Promise<{ digest: Digest; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

/** First 12 hex digits, as docker shows image and container ids. */
export function shortId(d: Digest | string): string {
  return d.replace(/^sha256:/, "").slice(0, 12);
}
