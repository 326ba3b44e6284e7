/**
 * Non-blocking Unix stream sockets on raw descriptors (socket(7), unix(7)), for device backends
 * that run in a thread whose event loop does not turn while the guest runs (the machine worker
 * during KVM_RUN or the software CPU loop): they are serviced by polling, never by callbacks.
 * Node's `net` needs the event loop, so the vsock backend uses these instead.
 */
import koffi from "koffi";
import { close } from "./libc.js";
import { SysError } from "./sys_error.js";

const libc = koffi.load("libc.so.6");
const c = {
  socket: libc.func("int socket(int domain, int type, int protocol)"),
  bind: libc.func("int bind(int fd, const void *addr, uint32_t len)"),
  listen: libc.func("int listen(int fd, int backlog)"),
  accept4: libc.func("int accept4(int fd, void *addr, void *len, int flags)"),
  connect: libc.func("int connect(int fd, const void *addr, uint32_t len)"),
  recv: libc.func("long recv(int fd, void *buf, size_t len, int flags)"),
  send: libc.func("long send(int fd, const void *buf, size_t len, int flags)"),
  shutdown: libc.func("int shutdown(int fd, int how)"),
};

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const SHUT_WR = 1;
const EAGAIN = 11;
const EINTR = 4;
/** sizeof(struct sockaddr_un): sa_family_t + char sun_path[108]. */
const SOCKADDR_UN_SIZE = 110;

function sockaddr(path: string): Uint8Array {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length > 107) {
    throw new SysError(`bind(${path})`, 36 /* ENAMETOOLONG */, "a Unix socket path is at most 107 bytes");
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  return addr;
}

function newSocket(what: string): number {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new SysError(`socket(AF_UNIX) for ${what}`, koffi.errno());
  return fd;
}

/** A listening socket bound at `path` (the path must not exist). */
export function listenUnix(path: string, backlog = 64): number {
  const fd = newSocket(path);
  const addr = sockaddr(path);
  if ((c.bind(fd, addr, addr.length) as number) < 0) {
    const errno = koffi.errno();
    close(fd);
    throw new SysError(`bind(${path})`, errno);
  }
  if ((c.listen(fd, backlog) as number) < 0) {
    const errno = koffi.errno();
    close(fd);
    throw new SysError(`listen(${path})`, errno);
  }
  return fd;
}

/** Accepts one pending connection (non-blocking), or returns -1 if none is waiting. */
export function acceptUnix(fd: number): number {
  const conn = c.accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (conn < 0) {
    const errno = koffi.errno();
    if (errno === EAGAIN || errno === EINTR) return -1;
    throw new SysError("accept4", errno);
  }
  return conn;
}

/**
 * Connects to the listener at `path`. Unix stream sockets connect at once or fail (nobody
 * listening: ECONNREFUSED or ENOENT; a full backlog: EAGAIN), so there is no in-progress state.
 */
export function connectUnix(path: string): number {
  const fd = newSocket(path);
  const addr = sockaddr(path);
  if ((c.connect(fd, addr, addr.length) as number) < 0) {
    const errno = koffi.errno();
    close(fd);
    throw new SysError(`connect(${path})`, errno);
  }
  return fd;
}

/** Reads up to buf.length bytes: the count, 0 at end of stream, -1 if nothing is waiting. */
export function recvSome(fd: number, buf: Uint8Array): number {
  const n = c.recv(fd, buf, buf.length, 0) as number;
  if (n < 0) {
    const errno = koffi.errno();
    if (errno === EAGAIN || errno === EINTR) return -1;
    throw new SysError(`recv(${fd})`, errno);
  }
  return n;
}

/** Writes what the socket takes now (no SIGPIPE): the count, 0 if its buffer is full. */
export function sendSome(fd: number, buf: Uint8Array): number {
  const n = c.send(fd, buf, buf.length, MSG_NOSIGNAL) as number;
  if (n < 0) {
    const errno = koffi.errno();
    if (errno === EAGAIN || errno === EINTR) return 0;
    throw new SysError(`send(${fd})`, errno);
  }
  return n;
}

/** Half-closes: the peer reads end of stream, and can still write to us. */
export function shutdownWrite(fd: number): void {
  c.shutdown(fd, SHUT_WR);
}

export { close as closeSocket };
