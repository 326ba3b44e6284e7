import { spawnSync } from "node:child_process";
import { gunzipSync } from "node:zlib";
import { BootError } from "./boot_error.js";
import { type BzImage, HDR } from "./bzimage.js";

/**
 * The compressed vmlinux inside a bzImage (linux-doc-6.1 x86/boot.rst, "payload_offset" and
 * "payload_length", protocol 2.08+): "the offset from the beginning of the protected-mode code to
 * the payload", whose format is identified by its magic. The kernel build (scripts/Makefile.lib)
 * appends the uncompressed size as 4 little-endian bytes to xz/lzma/lz4/zstd payloads
 * (size_append); gzip carries it in its own trailer (ISIZE). Decompressing it here lets a VMM load
 * vmlinux directly, as Firecracker does, instead of running the kernel's own decompressor.
 */

export type PayloadFormat = "gzip" | "xz" | "zstd" | "lzma" | "lz4" | "bzip2" | "lzo" | "unknown";

export interface KernelPayload {
  format: PayloadFormat;
  /** The payload bytes, a view into the bzImage. */
  bytes: Uint8Array;
}

const PAYLOAD_PROTOCOL = 0x0208;

/** Names the compression format from the magic (the formats scripts/Makefile.lib can produce). */
export function payloadFormat(b: Uint8Array): PayloadFormat {
  if (b[0] === 0x1f && (b[1] === 0x8b || b[1] === 0x9e)) return "gzip";
  if (b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58 && b[4] === 0x5a && b[5] === 0x00)
    return "xz";
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return "zstd";
  if (b[0] === 0x5d && b[1] === 0x00 && b[2] === 0x00) return "lzma";
  if (b[0] === 0x02 && b[1] === 0x21 && b[2] === 0x4c && b[3] === 0x18) return "lz4";
  if (b[0] === 0x42 && b[1] === 0x5a && b[2] === 0x68) return "bzip2";
  if (b[0] === 0x89 && b[1] === 0x4c && b[2] === 0x5a && b[3] === 0x4f) return "lzo";
  return "unknown";
}

/** Finds the payload. Throws BootError BOOT_PAYLOAD_MISSING on protocol < 2.08 or fields outside the file. */
export function kernelPayload(image: BzImage, name = "kernel"): KernelPayload {
  if (image.version < PAYLOAD_PROTOCOL) {
    throw new BootError(
      "BOOT_PAYLOAD_MISSING",
      `${name} uses boot protocol ${image.versionText}; payload_offset/payload_length need 2.08 or later`,
      { name, version: image.version },
    );
  }
  const dv = new DataView(image.bytes.buffer, image.bytes.byteOffset, image.bytes.byteLength);
  const offset = dv.getUint32(HDR.payload_offset, true);
  const length = dv.getUint32(HDR.payload_length, true);
  const pm = image.protectedMode;
  if (length === 0 || offset + length > pm.length) {
    throw new BootError(
      "BOOT_PAYLOAD_MISSING",
      `${name}'s payload (payload_offset 0x${offset.toString(16)}, payload_length ${length}) is not inside its ${pm.length}-byte protected-mode part: truncated?`,
      { name, offset, length, size: pm.length },
    );
  }
  const bytes = pm.subarray(offset, offset + length);
  return { format: payloadFormat(bytes), bytes };
}

/**
 * Decompresses the payload: gzip with node:zlib, xz with the host's `xz -dc` (xz-utils). The output
 * is bounded by `maxSize` (guest RAM) before it is allocated. Throws BootError
 * BOOT_PAYLOAD_UNSUPPORTED (another format), BOOT_PAYLOAD_NO_DECOMPRESSOR (xz not installed) or
 * BOOT_PAYLOAD_CORRUPT (the decompressor's complaint, or a size that disagrees with the trailer).
 */
export function decompressPayload(payload: KernelPayload, maxSize: number, name = "kernel"): Uint8Array {
  const { format, bytes } = payload;
  const corrupt = (why: string, cause?: unknown): BootError =>
    new BootError(
      "BOOT_PAYLOAD_CORRUPT",
      `${name}'s ${format} payload does not decompress: ${why}`,
      { name, format },
      cause,
    );
  switch (format) {
    case "gzip": {
      try {
        return new Uint8Array(gunzipSync(bytes, { maxOutputLength: maxSize }));
      } catch (err) {
        throw corrupt((err as Error).message, err);
      }
    }
    case "xz": {
      if (bytes.length < 4) throw corrupt("shorter than its size trailer");
      const expected = new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 4, 4).getUint32(0, true);
      if (expected > maxSize) {
        throw corrupt(`its size trailer says ${expected} bytes, more than guest memory (${maxSize})`);
      }
      // --single-stream: stop after the first .xz stream, ignoring the 4-byte size trailer.
      const r = spawnSync("xz", ["-dc", "--single-stream"], { input: bytes, maxBuffer: expected + 4096 });
      if (r.error !== undefined) {
        const code = (r.error as NodeJS.ErrnoException).code;
        if (code === "ENOENT") {
          throw new BootError(
            "BOOT_PAYLOAD_NO_DECOMPRESSOR",
            `${name}'s payload is xz-compressed and xz is not installed (apt-get install xz-utils)`,
            { name, format },
            r.error,
          );
        }
        throw corrupt(r.error.message, r.error);
      }
      if (r.status !== 0) throw corrupt(`xz exited with status ${r.status}: ${r.stderr.toString().trim()}`);
      const out = new Uint8Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.byteLength);
      if (out.length !== expected) {
        throw corrupt(`xz gave ${out.length} bytes, the size trailer says ${expected}: truncated payload?`);
      }
      return out;
    }
    case "zstd":
    case "lzma":
    case "lz4":
    case "bzip2":
    case "lzo":
    case "unknown":
      throw new BootError(
        "BOOT_PAYLOAD_UNSUPPORTED",
        `${name}'s payload is ${format === "unknown" ? "in an unknown format" : `${format}-compressed`}; Vessel decompresses gzip and xz kernels`,
        { name, format },
      );
  }
}
