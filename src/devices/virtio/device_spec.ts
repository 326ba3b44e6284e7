/**
 * What a virtio device is, as the CLI, the REST API and the library describe it, and the parsers
 * of the `vessel vm run` flags into it (one place, so every front end accepts the same syntax):
 *
 *   --disk PATH[,ro][,serial=ID]
 *   --net tap[,name=IFNAME][,mac=52:54:00:12:34:56][,host-ip=10.0.2.1/24][,bridge=BR]
 *   --vsock cid=N,uds=PATH
 */
import { UsageError } from "../../errors.js";

export type VirtioDeviceSpec =
  /**
   * A raw disk image; `serial` is the GET_ID answer; `ioThread` (default true) serves requests in
   * a worker thread of their own, false serves them in the machine worker at the notify.
   */
  | { kind: "blk"; path: string; readOnly?: boolean; serial?: string; ioThread?: boolean }
  /**
   * A TAP interface (created if missing; a name like "vessel%d" lets the kernel number it), the
   * guest's MAC, and optionally the host side: an address for the TAP ("10.0.2.1/24") or a
   * bridge to attach it to.
   */
  | { kind: "net"; tap: string; mac?: string; hostAddress?: string; bridge?: string }
  | { kind: "rng" }
  /** hvc0; `onOutput` receives what the guest writes (settable later on the ConsoleDevice). */
  | { kind: "console"; onOutput?: (bytes: Uint8Array) => void }
  /** Guest CID (3 or more) and the host Unix socket path (Firecracker's uds_path). */
  | { kind: "vsock"; cid: number; udsPath: string };

/** The TAP name used when `--net tap` names none: the kernel picks vessel0, vessel1, ... */
export const DEFAULT_TAP_NAME = "vessel%d";

/** Splits "a,b=c,d" into the first item and key=value options; bare words map to "". */
function options(text: string, flag: string): { head: string; opts: Map<string, string> } {
  const [head = "", ...rest] = text.split(",");
  const opts = new Map<string, string>();
  for (const item of rest) {
    const eq = item.indexOf("=");
    const key = eq < 0 ? item : item.slice(0, eq);
    if (key === "" || opts.has(key))
      throw new UsageError(
        "USAGE_VIRTIO_FLAG",
        `${flag} ${text}: bad or repeated option ${JSON.stringify(item)}`,
      );
    opts.set(key, eq < 0 ? "" : item.slice(eq + 1));
  }
  return { head, opts };
}

function rejectUnknown(opts: Map<string, string>, known: string[], flag: string, text: string): void {
  for (const key of opts.keys()) {
    if (!known.includes(key)) {
      throw new UsageError(
        "USAGE_VIRTIO_FLAG",
        `${flag} ${text}: unknown option ${JSON.stringify(key)} (known: ${known.join(", ")})`,
      );
    }
  }
}

/** `--disk PATH[,ro][,serial=ID]`. */
export function parseDiskFlag(text: string): VirtioDeviceSpec {
  const { head, opts } = options(text, "--disk");
  rejectUnknown(opts, ["ro", "serial"], "--disk", text);
  if (head === "")
    throw new UsageError("USAGE_VIRTIO_FLAG", "--disk needs an image path: --disk PATH[,ro][,serial=ID]");
  const serial = opts.get("serial");
  if (serial !== undefined && new TextEncoder().encode(serial).length > 20) {
    throw new UsageError("USAGE_VIRTIO_FLAG", `--disk ${text}: a serial is at most 20 bytes`);
  }
  return {
    kind: "blk",
    path: head,
    ...(opts.has("ro") ? { readOnly: true } : {}),
    ...(serial === undefined ? {} : { serial }),
  };
}

/** `--net tap[,name=IFNAME][,mac=MAC][,host-ip=CIDR][,bridge=BR]`. */
export function parseNetFlag(text: string): VirtioDeviceSpec {
  const { head, opts } = options(text, "--net");
  if (head !== "tap") {
    throw new UsageError(
      "USAGE_VIRTIO_FLAG",
      `--net ${text}: the only network backend is "tap": --net tap[,name=IFNAME][,mac=MAC][,host-ip=CIDR][,bridge=BR]`,
    );
  }
  rejectUnknown(opts, ["name", "mac", "host-ip", "bridge"], "--net", text);
  const mac = opts.get("mac");
  if (mac !== undefined && !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(mac)) {
    throw new UsageError(
      "USAGE_VIRTIO_FLAG",
      `--net ${text}: MAC ${JSON.stringify(mac)} is not like 52:54:00:12:34:56`,
    );
  }
  const hostIp = opts.get("host-ip");
  if (hostIp !== undefined && !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(hostIp)) {
    throw new UsageError(
      "USAGE_VIRTIO_FLAG",
      `--net ${text}: host-ip ${JSON.stringify(hostIp)} is not like 10.0.2.1/24`,
    );
  }
  if (hostIp !== undefined && opts.has("bridge")) {
    throw new UsageError(
      "USAGE_VIRTIO_FLAG",
      `--net ${text}: give the TAP either host-ip or bridge, not both`,
    );
  }
  const bridge = opts.get("bridge");
  return {
    kind: "net",
    tap: opts.get("name") || DEFAULT_TAP_NAME,
    ...(mac === undefined ? {} : { mac }),
    ...(hostIp === undefined ? {} : { hostAddress: hostIp }),
    ...(bridge === undefined ? {} : { bridge }),
  };
}

/** `--vsock cid=N,uds=PATH`. */
export function parseVsockFlag(text: string): VirtioDeviceSpec {
  // No leading item: every part is an option.
  const { opts } = options(`,${text}`, "--vsock");
  rejectUnknown(opts, ["cid", "uds"], "--vsock", text);
  const cid = Number(opts.get("cid"));
  const uds = opts.get("uds");
  if (!Number.isInteger(cid) || cid < 3 || cid >= 0xffffffff) {
    throw new UsageError(
      "USAGE_VIRTIO_FLAG",
      `--vsock ${text}: cid must be an integer of 3 or more: --vsock cid=3,uds=PATH`,
    );
  }
  if (uds === undefined || uds === "") {
    throw new UsageError(
      "USAGE_VIRTIO_FLAG",
      `--vsock ${text}: uds=PATH is the host socket: --vsock cid=3,uds=PATH`,
    );
  }
  return { kind: "vsock", cid, udsPath: uds };
}
