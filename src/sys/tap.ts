/**
 * TAP network devices for virtio-net (Documentation/networking/tuntap.rst, include/uapi/linux/if_tun.h):
 * /dev/net/tun attached to a TAP interface with TUNSETIFF (the kernel creates the interface if it
 * does not exist and removes it when the last descriptor closes), with IFF_VNET_HDR so every
 * frame read or written carries a virtio_net_hdr (checksum and segmentation offload metadata go
 * straight between the guest and the host kernel, as Firecracker and vhost do).
 *
 * The descriptor is non-blocking; `waitReadable` runs poll(2) on a koffi worker thread so the
 * machine worker's event loop never blocks on the TAP.
 */
import { execFileSync } from "node:child_process";
import koffi from "koffi";
import { VesselError } from "../errors.js";
import { close, ioctlInt, ioctlPtr, O_NONBLOCK, O_RDWR, open, POLLIN } from "./libc.js";
import { SysError } from "./sys_error.js";

const libc = koffi.load("libc.so.6");
const readC = libc.func("long read(int fd, void *buf, size_t count)");
const writeC = libc.func("long write(int fd, const void *buf, size_t count)");
const pollC = libc.func("int poll(void *fds, unsigned long nfds, int timeout)");

/** ioctl numbers: _IOW('T', n, int) (if_tun.h). */
const TUNSETIFF = 0x400454ca;
const TUNSETOFFLOAD = 0x400454d0;
const TUNSETVNETHDRSZ = 0x400454d8;
/** struct ifreq ifr_flags. */
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const IFNAMSIZ = 16;
/** TUNSETOFFLOAD flags: what the reader of the TAP (the guest) accepts. */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;

const EAGAIN = 11;

/** Host network configuration around a TAP failed (the `ip` command). */
export class TapError extends VesselError {}

export class Tap {
  private closed = false;
  private polling = false;
  private closeAfterPoll = false;

  private constructor(
    /** The interface name the kernel gave (the template's %d filled in). */
    readonly name: string,
    readonly fd: number,
  ) {}

  /**
   * Opens (creating if needed) the TAP interface `name` ("vessel%d" lets the kernel number it),
   * with virtio_net_hdr_v1 headers of `vnetHdrSize` bytes on every frame.
   */
  static open(name: string, vnetHdrSize = 12): Tap {
    if (new TextEncoder().encode(name).length >= IFNAMSIZ) {
      throw new SysError(
        `TUNSETIFF(${name})`,
        36 /* ENAMETOOLONG */,
        `interface names are at most ${IFNAMSIZ - 1} bytes`,
      );
    }
    const fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    try {
      const ifr = new Uint8Array(40);
      ifr.set(new TextEncoder().encode(name));
      new DataView(ifr.buffer).setUint16(IFNAMSIZ, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
      try {
        ioctlPtr(fd, TUNSETIFF, ifr, `TUNSETIFF(${name})`);
      } catch (err) {
        if (err instanceof SysError && (err.errnoName === "EPERM" || err.errnoName === "EACCES")) {
          throw new SysError(
            `ioctl(TUNSETIFF, ${name})`,
            err.errno,
            "creating a TAP device needs CAP_NET_ADMIN: run as root, or create it beforehand with `ip tuntap add NAME mode tap user $USER`",
          );
        }
        throw err;
      }
      const end = ifr.indexOf(0);
      const actual = new TextDecoder().decode(ifr.subarray(0, end < 0 ? IFNAMSIZ : Math.min(end, IFNAMSIZ)));
      const size = new Uint8Array(4);
      new DataView(size.buffer).setInt32(0, vnetHdrSize, true);
      ioctlPtr(fd, TUNSETVNETHDRSZ, size, "TUNSETVNETHDRSZ");
      return new Tap(actual, fd);
    } catch (err) {
      close(fd);
      throw err;
    }
  }

  /** Tells the kernel which offloads the reader accepts (TUN_F_*): it then hands us GSO frames. */
  setOffload(flags: number): void {
    // TUNSETOFFLOAD takes the flags as the ioctl argument itself, not through a pointer.
    ioctlInt(this.fd, TUNSETOFFLOAD, flags, "TUNSETOFFLOAD");
  }

  /** Reads one frame (with its vnet header) into `buf`; returns its length, or 0 if none is waiting. */
  read(buf: Uint8Array): number {
    const n = readC(this.fd, buf, buf.length) as number;
    if (n < 0) {
      const errno = koffi.errno();
      if (errno === EAGAIN) return 0;
      throw new SysError(`read(${this.name})`, errno);
    }
    return n;
  }

  /** Writes one frame (with its vnet header); returns false if the TAP's queue is full (EAGAIN). */
  write(frame: Uint8Array): boolean {
    const n = writeC(this.fd, frame, frame.length) as number;
    if (n < 0) {
      const errno = koffi.errno();
      if (errno === EAGAIN) return false;
      throw new SysError(`write(${this.name})`, errno);
    }
    return true;
  }

  /** Resolves true when a frame can be read, false after `timeoutMs` (poll(2) off this thread). */
  waitReadable(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    const pfd = new Uint8Array(8);
    const dv = new DataView(pfd.buffer);
    dv.setInt32(0, this.fd, true);
    dv.setInt16(4, POLLIN, true);
    this.polling = true;
    return new Promise((resolve) => {
      pollC.async(pfd, 1, timeoutMs, (err: unknown, ret: number) => {
        this.polling = false;
        if (this.closeAfterPoll) this.close();
        resolve(err === null && ret > 0 && !this.closed);
      });
    });
  }

  /** Closes the descriptor; a TAP Vessel created disappears with it. */
  close(): void {
    if (this.closed) return;
    if (this.polling) {
      // Another thread is in poll(2) on this fd: close when it returns, so the number is not reused under it.
      this.closeAfterPoll = true;
      return;
    }
    this.closed = true;
    close(this.fd);
  }
}

/** Gives the host end of a TAP an address and brings it up (`ip addr add`, `ip link set up`). */
export function configureTapAddress(name: string, cidr: string): void {
  runIp(["addr", "add", cidr, "dev", name]);
  runIp(["link", "set", name, "up"]);
}

/** Enslaves a TAP to an existing bridge and brings it up. */
export function attachTapToBridge(name: string, bridge: string): void {
  runIp(["link", "set", name, "master", bridge]);
  runIp(["link", "set", name, "up"]);
}

function runIp(args: string[]): void {
  try {
    execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? "";
    throw new TapError(
      "TAP_IP",
      `\`ip ${args.join(" ")}\` failed: ${stderr || (err as Error).message}`,
      { args },
      err,
    );
  }
}
