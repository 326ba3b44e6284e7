/**
 * Receiving a file descriptor over a Unix socket (unix(7) SCM_RIGHTS), which Node's `net` cannot
 * do: the container runtime's helper sends a container's pty master to the --console-socket.
 */
import koffi from "koffi";
import { SysError } from "./sys_error.js";

const libc = koffi.load("libc.so.6");
const c = {
  recvmsg: libc.func("long recvmsg(int fd, void *msg, int flags)"),
};

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_CMSG_CLOEXEC = 0x40000000;
const EAGAIN = 11;
const EINTR = 4;
/** struct msghdr on x86-64: name, namelen(+pad), iov, iovlen, control, controllen, flags(+pad). */
const MSGHDR_SIZE = 56;
/** CMSG_SPACE(sizeof(int)): a 16-byte cmsghdr and the int, rounded up to 8. */
const CMSG_SPACE_INT = 24;

/**
 * Reads one message from the (non-blocking) socket `fd` with the descriptor it carries.
 * Returns undefined if nothing is waiting yet; `fd` is -1 when the message carried none.
 */
export function recvFd(fd: number, maxData = 1024): { fd: number; data: Buffer } | undefined {
  const data = koffi.alloc("uint8_t", maxData);
  const control = koffi.alloc("uint8_t", CMSG_SPACE_INT);
  const iov = koffi.alloc("uint8_t", 16);
  const msg = koffi.alloc("uint8_t", MSGHDR_SIZE);
  try {
    const iovView = new DataView(koffi.view(iov, 16));
    iovView.setBigUint64(0, BigInt(koffi.address(data)), true);
    iovView.setBigUint64(8, BigInt(maxData), true);
    new Uint8Array(koffi.view(control, CMSG_SPACE_INT)).fill(0);
    const m = new DataView(koffi.view(msg, MSGHDR_SIZE));
    for (let i = 0; i < MSGHDR_SIZE; i += 8) m.setBigUint64(i, 0n, true);
    m.setBigUint64(16, BigInt(koffi.address(iov)), true);
    m.setBigUint64(24, 1n, true);
    m.setBigUint64(32, BigInt(koffi.address(control)), true);
    m.setBigUint64(40, BigInt(CMSG_SPACE_INT), true);
    const n = Number(c.recvmsg(fd, msg, MSG_CMSG_CLOEXEC));
    if (n < 0) {
      const errno = koffi.errno();
      if (errno === EAGAIN || errno === EINTR) return undefined;
      throw new SysError(`recvmsg(${fd})`, errno);
    }
    const payload = Buffer.from(new Uint8Array(koffi.view(data, n)));
    const controllen = Number(m.getBigUint64(40, true));
    const cm = new DataView(koffi.view(control, CMSG_SPACE_INT));
    let passed = -1;
    if (controllen >= 20 && cm.getInt32(8, true) === SOL_SOCKET && cm.getInt32(12, true) === SCM_RIGHTS) {
      passed = cm.getInt32(16, true);
    }
    return { fd: passed, data: payload };
  } finally {
    koffi.free(data);
    koffi.free(control);
    koffi.free(iov);
    koffi.free(msg);
  }
}
