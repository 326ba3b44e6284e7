/*
 * vessel-nsexec: the one step of Vessel's OCI runtime that Node.js cannot do itself (the role of
 * runc's nsexec). Node cannot fork, and setns/unshare of some namespaces need a single-threaded
 * caller, so this small program clones the container's init process and performs, in order, the
 * operations of a *plan* that TypeScript computed (src/container/plan.ts). It holds no policy:
 * which namespaces, which mounts in which order, which capabilities, which seccomp program, all
 * come from the plan. It only knows how to carry out each operation safely.
 *
 * Invocation: vessel-nsexec <sync-fd>
 *   <sync-fd> is a stream socket to the runtime. The runtime first writes the plan:
 *     u32 total length, then three op lists (pre-clone in this process, post-clone in this
 *     process, in the child), each: u32 op count, then per op: u32 argc, argc x (u32 len, bytes).
 *   Then the socket carries text lines: "pid N" (this process, after the clone), "sync NAME"
 *   (child, waits for a line "ok" or "fail MSG"), "ready" (child, set-up done), "error MSG".
 *
 * CVE-2019-5736: before anything else, the program re-executes itself from a sealed memfd copy,
 * so /proc/<pid>/exe of any process that later enters the container's namespaces is an
 * immutable anonymous file, not the binary on the host; it is also made non-dumpable.
 * CVE-2024-21626: every fd above the preserved ones is marked close-on-exec before the final
 * execve, and the working directory is checked to be reachable from the container's root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "line_io.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

struct op {
  uint32_t argc;
  char **argv;
  uint32_t *lens;
};
struct list {
  uint32_t n;
  struct op *ops;
};

static int sync_fd = -1;
static int console_fd = -1;
static int fifo_fd = -1;
static pid_t child_pid = 0;
static int in_child = 0;

static void send_line(const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
  for (int i = 0; i < n; i++)
    if (buf[i] == '\n') buf[i] = ' ';
  buf[n++] = '\n';
  /* after "ready" the runtime may be gone: then the message goes to the container's stderr, as
   * runc's "exec failed" does */
  ssize_t off = 0;
  while (sync_fd >= 0 && off < n) {
    ssize_t w = send(sync_fd, buf + off, n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += w;
  }
  if (off < n) {
    static const char prefix[] = "vessel-runc: ";
    if (!strncmp(buf, "error ", 6)) {
      (void)!write(2, prefix, sizeof prefix - 1);
      (void)!write(2, buf + 6, n - 6);
    }
  }
}

/* Reports an error with the failing operation and errno, then exits. The child's report reaches
 * the runtime directly; the runtime turns it into a ContainerError. */
__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
  char buf[3000];
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (saved)
    send_line("error %s: %s", buf, strerror(saved));
  else
    send_line("error %s", buf);
  if (!in_child && child_pid > 0) kill(child_pid, SIGKILL);
  _exit(1);
}

/* ---- CVE-2019-5736: run from a sealed memfd copy of ourselves ---- */
static void reexec_from_sealed_memfd(char **argv) {
  char link[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", link, sizeof link - 1);
  if (n < 0) die("readlink /proc/self/exe");
  link[n] = 0;
  if (strncmp(link, "/memfd:vessel-nsexec", 20) == 0) return;
  int src = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (src < 0) die("open /proc/self/exe");
  int mfd = memfd_create("vessel-nsexec", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
  if (mfd < 0 && errno == EINVAL) mfd = memfd_create("vessel-nsexec", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0) die("memfd_create");
  struct stat st;
  if (fstat(src, &st) < 0) die("fstat /proc/self/exe");
  off_t left = st.st_size;
  while (left > 0) {
    ssize_t c = sendfile(mfd, src, NULL, left);
    if (c < 0 && errno == EINTR) continue;
    if (c <= 0) die("copy /proc/self/exe to memfd");
    left -= c;
  }
  close(src);
  if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
    die("seal memfd");
  fexecve(mfd, argv, environ);
  die("fexecve sealed copy");
}

/* ---- plan decoding ---- */
static void read_full(int fd, void *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t r = read(fd, (char *)buf + off, len - off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      die("read plan");
    }
    off += r;
  }
}

static uint32_t get_u32(const unsigned char **p, const unsigned char *end) {
  if (end - *p < 4) {
    errno = 0;
    die("plan truncated");
  }
  uint32_t v = (*p)[0] | ((*p)[1] << 8) | ((*p)[2] << 16) | ((uint32_t)(*p)[3] << 24);
  *p += 4;
  return v;
}

static void decode_list(const unsigned char **p, const unsigned char *end, struct list *l) {
  l->n = get_u32(p, end);
  if (l->n > 100000) die("plan: too many ops");
  l->ops = calloc(l->n ? l->n : 1, sizeof(struct op));
  for (uint32_t i = 0; i < l->n; i++) {
    struct op *o = &l->ops[i];
    o->argc = get_u32(p, end);
    if (o->argc == 0 || o->argc > 100000) die("plan: bad argc");
    o->argv = calloc(o->argc + 1, sizeof(char *));
    o->lens = calloc(o->argc, sizeof(uint32_t));
    for (uint32_t a = 0; a < o->argc; a++) {
      uint32_t len = get_u32(p, end);
      if ((size_t)(end - *p) < len) die("plan truncated in arg");
      o->argv[a] = malloc(len + 1);
      memcpy(o->argv[a], *p, len);
      o->argv[a][len] = 0;
      o->lens[a] = len;
      *p += len;
    }
  }
}

static unsigned long long num(const char *s) { return strtoull(s, NULL, 0); }

static void need(struct op *o, uint32_t n) {
  if (o->argc < n) {
    errno = 0;
    die("plan: op %s needs %u args", o->argv[0], n - 1);
  }
}

/* Reads one line from the runtime (the answer to "sync NAME"). */
static void wait_ok(const char *what) {
  char buf[1024];
  size_t n = 0;
  while (n < sizeof buf - 1) {
    ssize_t r = read(sync_fd, buf + n, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      errno = 0;
      die("runtime went away during %s", what);
    }
    if (buf[n] == '\n') break;
    n++;
  }
  buf[n] = 0;
  if (strcmp(buf, "ok") != 0) {
    errno = 0;
    /* the runtime already knows why; exit quietly */
    _exit(1);
  }
}

static void write_file(const char *path, const char *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die("open %s", path);
  if (write(fd, data, len) != (ssize_t)len) die("write %s", path);
  close(fd);
}

/* ---- safe path handling inside the rootfs (symlinks resolved as if the rootfs were "/") ---- */
static int open_in_root(int rootfd, const char *rel, int flags) {
  struct open_how how = {.flags = flags | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
  return syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
}

/* mkdir -p of rel under rootfd; the last component is a file when kind is 'f'. Returns an O_PATH
 * fd of the result. Each step is resolved under the root, so a symlink in the image cannot make
 * a mount land outside the rootfs (CVE-2021-30465 class). */
static int mkpath_in_root(int rootfd, const char *rel, char kind) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", rel);
  int fd = open_in_root(rootfd, path, O_PATH);
  if (fd >= 0) return fd;
  if (errno != ENOENT) die("resolve %s in rootfs", rel);
  size_t len = strlen(path);
  for (size_t i = 1; i <= len; i++) {
    if (path[i] != '/' && path[i] != 0) continue;
    char saved = path[i];
    path[i] = 0;
    int cur = open_in_root(rootfd, path, O_PATH);
    if (cur < 0) {
      if (errno != ENOENT) die("resolve %s in rootfs", path);
      char *slash = strrchr(path, '/');
      const char *name = slash ? slash + 1 : path;
      int parent;
      if (slash && slash != path) {
        *slash = 0;
        parent = open_in_root(rootfd, path, O_PATH | O_DIRECTORY);
        *slash = '/';
      } else {
        parent = dup(rootfd);
      }
      if (parent < 0) die("open parent of %s in rootfs", path);
      int last = saved == 0;
      if (last && kind == 'f') {
        int f = openat(parent, name, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (f < 0 && errno != EEXIST) die("create %s in rootfs", path);
        if (f >= 0) close(f);
      } else if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST) {
        die("mkdir %s in rootfs", path);
      }
      close(parent);
    } else {
      close(cur);
    }
    path[i] = saved;
  }
  fd = open_in_root(rootfd, rel, O_PATH);
  if (fd < 0) die("resolve %s in rootfs", rel);
  return fd;
}

static int rootfs_fd = -1;
static struct {
  int fd, type;
  const char *path;
} pending_ns[16];
static int n_pending_ns = 0;
static int cgroup_fds[32];
static int n_cgroup_fds = 0;

static void fdpath(int fd, char *buf, size_t n) { snprintf(buf, n, "/proc/self/fd/%d", fd); }

/* ---- a fork+exec'd hook in the container's namespaces (createContainer, startContainer) ---- */
static void run_hook(struct op *o) {
  /* hook PATH TIMEOUT STDIN NARGS NENV args... env... */
  need(o, 6);
  const char *path = o->argv[1];
  int timeout = (int)num(o->argv[2]);
  const char *in = o->argv[3];
  uint32_t inlen = o->lens[3];
  uint32_t nargs = num(o->argv[4]), nenv = num(o->argv[5]);
  if (6 + nargs + nenv > o->argc) die("plan: hook args");
  char **args = calloc(nargs + 2, sizeof(char *));
  char **env = calloc(nenv + 1, sizeof(char *));
  for (uint32_t i = 0; i < nargs; i++) args[i] = o->argv[6 + i];
  if (nargs == 0) args[0] = (char *)path;
  for (uint32_t i = 0; i < nenv; i++) env[i] = o->argv[6 + nargs + i];
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) die("pipe for hook");
  pid_t pid = fork();
  if (pid < 0) die("fork hook");
  if (pid == 0) {
    dup2(p[0], 0);
    execve(path, args, env);
    _exit(127);
  }
  close(p[0]);
  (void)!write(p[1], in, inlen);
  close(p[1]);
  int status;
  for (int waited = 0;; waited += 10) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (timeout > 0 && waited >= timeout * 1000) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      errno = 0;
      die("hook %s timed out after %ds", path, timeout);
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    errno = 0;
    die("hook %s failed (status %d)", path, status);
  }
}

/* ---- the terminal: a pty in the container's devpts, master sent to --console-socket ---- */
/* bind_console: the container's init binds its pty on /dev/console; an exec'd process must not
   (runc does not: the mount would outlive the exec's pty in the container's mount namespace) */
static void setup_pty(int bind_console) {
  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) die("open /dev/ptmx");
  int unlock = 0;
  if (ioctl(master, TIOCSPTLCK, &unlock) < 0) die("unlockpt");
  int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
  char name[64];
  int ptn;
  if (ioctl(master, TIOCGPTN, &ptn) < 0) die("TIOCGPTN");
  snprintf(name, sizeof name, "/dev/pts/%d", ptn);
  if (slave < 0) slave = open(name, O_RDWR | O_NOCTTY);
  if (slave < 0) die("open %s", name);
  if (console_fd >= 0) {
    struct msghdr msg = {0};
    struct iovec iov = {.iov_base = name, .iov_len = strlen(name)};
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &master, sizeof(int));
    if (sendmsg(console_fd, &msg, 0) < 0) die("send pty master to console socket");
    close(console_fd);
    console_fd = -1;
  }
  close(master);
  /* /dev/console in the container is the pty (runtime spec: "config-linux.md#devices") */
  int cfd = bind_console ? open("/dev/console", O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600) : -1;
  if (cfd >= 0) {
    close(cfd);
    if (mount(name, "/dev/console", NULL, MS_BIND, NULL) < 0) die("bind %s on /dev/console", name);
  }
  if (setsid() < 0) die("setsid");
  if (ioctl(slave, TIOCSCTTY, 0) < 0) die("TIOCSCTTY");
  for (int i = 0; i < 3; i++)
    if (dup2(slave, i) < 0) die("dup2 pty");
  if (slave > 2) close(slave);
}

static void apply_caps(uint64_t eff, uint64_t perm, uint64_t inh) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  d[0].effective = (uint32_t)eff;
  d[1].effective = (uint32_t)(eff >> 32);
  d[0].permitted = (uint32_t)perm;
  d[1].permitted = (uint32_t)(perm >> 32);
  d[0].inheritable = (uint32_t)inh;
  d[1].inheritable = (uint32_t)(inh >> 32);
  if (syscall(SYS_capset, &h, d) < 0) die("capset");
}

static char *lookup_path(const char *file, char **env) {
  if (strchr(file, '/')) return (char *)file;
  const char *pathv = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (char **e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) pathv = *e + 5;
  char *copy = strdup(pathv);
  for (char *dir = strtok(copy, ":"); dir; dir = strtok(NULL, ":")) {
    char *cand = malloc(strlen(dir) + strlen(file) + 2);
    sprintf(cand, "%s/%s", *dir ? dir : ".", file);
    struct stat st;
    if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) return cand;
    free(cand);
  }
  errno = 0;
  die("exec: \"%s\": executable file not found in $PATH", file);
}

static void run_op(struct op *o) {
  const char *n = o->argv[0];
  char fp[64];
  if (!strcmp(n, "mkfifo")) {
    need(o, 3);
    if (mkfifo(o->argv[1], num(o->argv[2])) < 0) die("mkfifo %s", o->argv[1]);
  } else if (!strcmp(n, "write")) {
    need(o, 3);
    write_file(o->argv[1], o->argv[2], o->lens[2]);
  } else if (!strcmp(n, "setns")) {
    /* opened now, joined together right before the clone: once the mount namespace is joined,
     * /proc is the container's and the other /proc/<pid>/ns paths no longer resolve */
    need(o, 3);
    if (n_pending_ns >= 16) die("plan: too many namespaces");
    int fd = open(o->argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open namespace %s", o->argv[1]);
    pending_ns[n_pending_ns].fd = fd;
    pending_ns[n_pending_ns].type = (int)num(o->argv[2]);
    pending_ns[n_pending_ns].path = o->argv[1];
    n_pending_ns++;
  } else if (!strcmp(n, "console")) {
    need(o, 2);
    console_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(o->argv[1]) >= sizeof a.sun_path) {
      errno = ENAMETOOLONG;
      die("console socket %s", o->argv[1]);
    }
    strcpy(a.sun_path, o->argv[1]);
    if (connect(console_fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect console socket %s", o->argv[1]);
  } else if (!strcmp(n, "dumpable")) {
    need(o, 2);
    if (prctl(PR_SET_DUMPABLE, num(o->argv[1]), 0, 0, 0) < 0) die("prctl PR_SET_DUMPABLE");
  } else if (!strcmp(n, "sethostname")) {
    need(o, 2);
    if (sethostname(o->argv[1], o->lens[1]) < 0) die("sethostname %s", o->argv[1]);
  } else if (!strcmp(n, "setdomainname")) {
    need(o, 2);
    if (setdomainname(o->argv[1], o->lens[1]) < 0) die("setdomainname %s", o->argv[1]);
  } else if (!strcmp(n, "mount")) {
    /* mount SRC TARGET FSTYPE FLAGS DATA: host paths, as given */
    need(o, 6);
    const char *src = o->lens[1] ? o->argv[1] : NULL;
    const char *fs = o->lens[3] ? o->argv[3] : NULL;
    const char *data = o->lens[5] ? o->argv[5] : NULL;
    if (mount(src, o->argv[2], fs, num(o->argv[4]), data) < 0)
      die("mount %s on %s (type %s)", o->argv[1], o->argv[2], o->argv[3]);
  } else if (!strcmp(n, "rootfs")) {
    need(o, 2);
    rootfs_fd = open(o->argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfs_fd < 0) die("open rootfs %s", o->argv[1]);
  } else if (!strcmp(n, "mountin")) {
    /* mountin DEST KIND SRC FSTYPE FLAGS DATA: DEST inside the rootfs, created (dir or file) */
    need(o, 7);
    if (rootfs_fd < 0) die("plan: mountin before rootfs");
    int fd = mkpath_in_root(rootfs_fd, o->argv[1], o->argv[2][0]);
    fdpath(fd, fp, sizeof fp);
    const char *src = o->lens[3] ? o->argv[3] : NULL;
    const char *fs = o->lens[4] ? o->argv[4] : NULL;
    const char *data = o->lens[6] ? o->argv[6] : NULL;
    if (mount(src, fp, fs, num(o->argv[5]), data) < 0)
      die("mount %s on %s (type %s)", o->argv[3], o->argv[1], o->argv[4]);
    close(fd);
  } else if (!strcmp(n, "mkdirin")) {
    need(o, 2);
    close(mkpath_in_root(rootfs_fd, o->argv[1], 'd'));
  } else if (!strcmp(n, "device")) {
    /* device DEST MODE MAJOR MINOR UID GID HOSTPATH: mknod, or bind the host node when mknod is
     * not permitted (a user namespace) */
    need(o, 8);
    char rel[PATH_MAX];
    snprintf(rel, sizeof rel, "%s", o->argv[1]);
    char *slash = strrchr(rel, '/');
    int parent = slash && slash != rel ? (*slash = 0, mkpath_in_root(rootfs_fd, rel, 'd')) : dup(rootfs_fd);
    const char *name = slash ? slash + 1 : rel;
    int dfd = open_in_root(rootfs_fd, o->argv[1], O_PATH);
    if (dfd >= 0) {
      /* something is already there (an image's own node): replace it */
      close(dfd);
      fdpath(parent, fp, sizeof fp);
      char full[PATH_MAX];
      snprintf(full, sizeof full, "%s/%s", fp, name);
      unlink(full);
    }
    fdpath(parent, fp, sizeof fp);
    int pdir = open(fp, O_DIRECTORY | O_CLOEXEC);
    if (pdir < 0) die("open %s", fp);
    dev_t dev = makedev(num(o->argv[3]), num(o->argv[4]));
    if (mknodat(pdir, name, num(o->argv[2]), dev) == 0) {
      if (fchownat(pdir, name, num(o->argv[5]), num(o->argv[6]), AT_SYMLINK_NOFOLLOW) < 0) die("chown %s", o->argv[1]);
      char full[PATH_MAX];
      snprintf(full, sizeof full, "%s/%s", fp, name);
      chmod(full, num(o->argv[2]) & 07777);
    } else if (errno == EPERM && o->lens[7]) {
      int f = openat(pdir, name, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (f < 0) die("create %s", o->argv[1]);
      close(f);
      int t = open_in_root(rootfs_fd, o->argv[1], O_PATH);
      char tp[64];
      fdpath(t, tp, sizeof tp);
      if (mount(o->argv[7], tp, NULL, MS_BIND, NULL) < 0) die("bind %s on %s", o->argv[7], o->argv[1]);
      close(t);
    } else {
      die("mknod %s", o->argv[1]);
    }
    close(pdir);
    close(parent);
  } else if (!strcmp(n, "symlink")) {
    need(o, 3);
    char rel[PATH_MAX];
    snprintf(rel, sizeof rel, "%s", o->argv[2]);
    char *slash = strrchr(rel, '/');
    int parent = slash && slash != rel ? (*slash = 0, mkpath_in_root(rootfs_fd, rel, 'd')) : dup(rootfs_fd);
    const char *name = slash ? slash + 1 : rel;
    fdpath(parent, fp, sizeof fp);
    int pdir = open(fp, O_DIRECTORY | O_CLOEXEC);
    if (pdir < 0) die("open %s", fp);
    if (symlinkat(o->argv[1], pdir, name) < 0 && errno != EEXIST) die("symlink %s", o->argv[2]);
    close(pdir);
    close(parent);
  } else if (!strcmp(n, "fifoopen")) {
    need(o, 2);
    /* O_RDWR never blocks on a fifo; the later read blocks until `start` writes a byte. */
    fifo_fd = open(o->argv[1], O_RDWR | O_CLOEXEC);
    if (fifo_fd < 0) die("open exec fifo %s", o->argv[1]);
  } else if (!strcmp(n, "fifowait")) {
    char c;
    for (;;) {
      ssize_t r = read(fifo_fd, &c, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r != 1) die("wait on exec fifo");
      break;
    }
    close(fifo_fd);
    fifo_fd = -1;
  } else if (!strcmp(n, "pivot")) {
    /* pivot_root(".", ".") then detach the old root (runc's pivotRoot, no temp dir needed) */
    need(o, 2);
    int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    int newroot = open(o->argv[1], O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (oldroot < 0 || newroot < 0) die("open roots for pivot_root");
    if (fchdir(newroot) < 0) die("chdir rootfs");
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root %s", o->argv[1]);
    if (fchdir(oldroot) < 0) die("fchdir old root");
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0) die("make old root rslave");
    if (umount2(".", MNT_DETACH) < 0) die("detach old root");
    if (chdir("/") < 0) die("chdir /");
    close(oldroot);
    close(newroot);
    if (rootfs_fd >= 0) close(rootfs_fd);
    rootfs_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  } else if (!strcmp(n, "chroot")) {
    need(o, 2);
    if (chdir(o->argv[1]) < 0) die("chdir %s", o->argv[1]);
    if (mount(o->argv[1], "/", NULL, MS_MOVE, NULL) < 0) die("move rootfs to /");
    if (chroot(".") < 0) die("chroot");
    if (chdir("/") < 0) die("chdir /");
    if (rootfs_fd >= 0) close(rootfs_fd);
    rootfs_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  } else if (!strcmp(n, "maskpath")) {
    need(o, 2);
    struct stat st;
    if (stat(o->argv[1], &st) < 0) {
      if (errno == ENOENT) return;
      die("stat %s", o->argv[1]);
    }
    if (S_ISDIR(st.st_mode)) {
      if (mount("tmpfs", o->argv[1], "tmpfs", MS_RDONLY, NULL) < 0) die("mask %s", o->argv[1]);
    } else if (mount("/dev/null", o->argv[1], NULL, MS_BIND, NULL) < 0) {
      die("mask %s", o->argv[1]);
    }
  } else if (!strcmp(n, "readonly")) {
    need(o, 2);
    if (mount(o->argv[1], o->argv[1], NULL, MS_BIND | MS_REC, NULL) < 0) {
      if (errno == ENOENT) return;
      die("bind %s read-only", o->argv[1]);
    }
    if (mount(NULL, o->argv[1], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
        mount(NULL, o->argv[1], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
      die("remount %s read-only", o->argv[1]);
  } else if (!strcmp(n, "chdir")) {
    need(o, 2);
    if (chdir(o->argv[1]) < 0) die("chdir to cwd %s", o->argv[1]);
    /* CVE-2024-21626: the cwd must be reachable from the container's root */
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/') die("cwd %s is outside the container root", o->argv[1]);
  } else if (!strcmp(n, "sync")) {
    need(o, 2);
    send_line("sync %s", o->argv[1]);
    wait_ok(o->argv[1]);
  } else if (!strcmp(n, "ready")) {
    send_line("ready");
  } else if (!strcmp(n, "hook")) {
    run_hook(o);
  } else if (!strcmp(n, "pty") || !strcmp(n, "exec-pty")) {
    /* pty|exec-pty [ROWS COLS]: the initial size from process.consoleSize; exec-pty leaves
       /dev/console alone */
    setup_pty(!strcmp(n, "pty"));
    if (o->argc >= 3) {
      struct winsize ws = {.ws_row = (unsigned short)num(o->argv[1]), .ws_col = (unsigned short)num(o->argv[2])};
      if (ioctl(0, TIOCSWINSZ, &ws) < 0) die("set console size");
    }
  } else if (!strcmp(n, "personality")) {
    need(o, 2);
    if (personality((unsigned long)num(o->argv[1])) < 0) die("personality %s", o->argv[1]);
  } else if (!strcmp(n, "setsid")) {
    if (setsid() < 0 && errno != EPERM) die("setsid");
  } else if (!strcmp(n, "rlimit")) {
    need(o, 4);
    struct rlimit rl = {.rlim_cur = num(o->argv[2]), .rlim_max = num(o->argv[3])};
    if (setrlimit((int)num(o->argv[1]), &rl) < 0) die("setrlimit %s", o->argv[1]);
  } else if (!strcmp(n, "umask")) {
    need(o, 2);
    umask(num(o->argv[1]));
  } else if (!strcmp(n, "keepcaps")) {
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die("PR_SET_KEEPCAPS");
  } else if (!strcmp(n, "setgroups")) {
    /* setgroups G... (none: clear) */
    gid_t *g = calloc(o->argc, sizeof(gid_t));
    for (uint32_t i = 1; i < o->argc; i++) g[i - 1] = num(o->argv[i]);
    if (setgroups(o->argc - 1, g) < 0) die("setgroups");
  } else if (!strcmp(n, "setgid")) {
    need(o, 2);
    gid_t g = num(o->argv[1]);
    if (setresgid(g, g, g) < 0) die("setgid %u", g);
  } else if (!strcmp(n, "setuid")) {
    need(o, 2);
    uid_t u = num(o->argv[1]);
    if (setresuid(u, u, u) < 0) die("setuid %u", u);
  } else if (!strcmp(n, "bounding")) {
    /* bounding KEEPMASK: drop every capability not in the mask from the bounding set */
    need(o, 2);
    uint64_t keep = num(o->argv[1]);
    for (int c = 0; c <= 63; c++) {
      if (keep & (1ULL << c)) continue;
      if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) <= 0) continue;
      if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) die("drop capability %d from bounding set", c);
    }
  } else if (!strcmp(n, "caps")) {
    need(o, 4);
    apply_caps(num(o->argv[1]), num(o->argv[2]), num(o->argv[3]));
  } else if (!strcmp(n, "ambient")) {
    need(o, 2);
    uint64_t m = num(o->argv[1]);
    for (int c = 0; c <= 63; c++)
      if ((m & (1ULL << c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
        die("raise ambient capability %d", c);
  } else if (!strcmp(n, "cgroup")) {
    /* cgroup PROCSFILE: opened now (before any setns), the child's pid written after the clone */
    need(o, 2);
    if (n_cgroup_fds >= 32) die("plan: too many cgroups");
    int fd = open(o->argv[1], O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("open %s", o->argv[1]);
    cgroup_fds[n_cgroup_fds++] = fd;
  } else if (!strcmp(n, "devfilter")) {
    /* devfilter CGROUPDIR PROGRAM: load the eBPF device filter compiled by device_filter.ts and
     * attach it to a cgroup v2 directory (the kernel keeps it until the cgroup goes) */
    need(o, 3);
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    a.insn_cnt = o->lens[2] / 8;
    a.insns = (uint64_t)(uintptr_t)o->argv[2];
    a.license = (uint64_t)(uintptr_t) "MIT";
    int prog = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a);
    if (prog < 0) {
      /* again with the verifier's log, to say why */
      static char log[4096];
      int saved = errno;
      a.log_level = 1;
      a.log_size = sizeof log;
      a.log_buf = (uint64_t)(uintptr_t)log;
      syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a);
      errno = saved;
      die("load the device filter (BPF_PROG_LOAD; verifier: %.300s)", log);
    }
    int cg = open(o->argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg < 0) die("open cgroup %s", o->argv[1]);
    memset(&a, 0, sizeof a);
    a.target_fd = cg;
    a.attach_bpf_fd = prog;
    a.attach_type = BPF_CGROUP_DEVICE;
    a.attach_flags = BPF_F_ALLOW_MULTI;
    if (syscall(SYS_bpf, BPF_PROG_ATTACH, &a, sizeof a) < 0) die("attach the device filter to %s", o->argv[1]);
    close(prog);
    close(cg);
  } else if (!strcmp(n, "unshare")) {
    need(o, 2);
    if (unshare((int)num(o->argv[1])) < 0) die("unshare 0x%llx", num(o->argv[1]));
  } else if (!strcmp(n, "keyring")) {
    /* a fresh session keyring, so containers do not share the host's (runc does the same) */
    need(o, 2);
    if (syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, o->argv[1]) < 0 && errno != ENOSYS)
      die("join session keyring");
  } else if (!strcmp(n, "nnp")) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("PR_SET_NO_NEW_PRIVS");
  } else if (!strcmp(n, "seccomp")) {
    /* seccomp FLAGS PROGRAM: PROGRAM is struct sock_filter[] as compiled by seccomp.ts */
    need(o, 3);
    struct sock_fprog prog = {.len = (unsigned short)(o->lens[2] / sizeof(struct sock_filter)),
                              .filter = (struct sock_filter *)o->argv[2]};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (unsigned)num(o->argv[1]), &prog) < 0) die("load seccomp filter");
  } else if (!strcmp(n, "cloexec")) {
    /* CVE-2024-21626: nothing above the preserved fds reaches the container */
    need(o, 2);
    unsigned from = num(o->argv[1]);
    if (syscall(SYS_close_range, from, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
      for (int fd = from; fd < 65536; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
  } else if (!strcmp(n, "exec")) {
    /* exec NARGS NENV args... env... */
    need(o, 4);
    uint32_t na = num(o->argv[1]), ne = num(o->argv[2]);
    if (3 + na + ne > o->argc || na == 0) die("plan: exec args");
    char **args = calloc(na + 1, sizeof(char *));
    char **env = calloc(ne + 1, sizeof(char *));
    for (uint32_t i = 0; i < na; i++) args[i] = o->argv[3 + i];
    for (uint32_t i = 0; i < ne; i++) env[i] = o->argv[3 + na + i];
    char *file = lookup_path(args[0], env);
    execve(file, args, env);
    die("exec %s", file);
  } else if (!strcmp(n, "lookup")) {
    /* lookup ARG0 NENV env...: fail at create time, as runc does, when the program is missing */
    need(o, 3);
    uint32_t ne = num(o->argv[2]);
    char **env = calloc(ne + 1, sizeof(char *));
    for (uint32_t i = 0; i < ne && 3 + i < o->argc; i++) env[i] = o->argv[3 + i];
    char *f = lookup_path(o->argv[1], env);
    if (access(f, X_OK) < 0) die("exec: \"%s\"", f);
  } else {
    errno = 0;
    die("plan: unknown op %s", n);
  }
}

static void run_list(struct list *l) {
  for (uint32_t i = 0; i < l->n; i++) run_op(&l->ops[i]);
}

/* ---- after the clone: relay the child's messages, report its exit, wait for the verdict ---- */
static volatile sig_atomic_t forward_to = 0;
static void forward_signal(int sig) {
  if (forward_to > 0) kill(forward_to, sig);
}

/*
 * This process stays until the runtime says how to end: it forwards the child's lines (sync,
 * ready, error) to the runtime and the runtime's answers to the child; in a foreground run it
 * waits for the child, sends "exit N", and forwards signals to it. The runtime ends with
 * "exit N" (after optional "stdout LEN"/"stderr LEN" blocks for this process's stdout/stderr,
 * which is how the runtime server speaks through the launcher that became this process).
 */
static int relay(int child_fd, int wait_child) {
  int pidfd = wait_child ? (int)syscall(SYS_pidfd_open, child_pid, 0) : -1;
  int child_status = -1;
  if (wait_child) {
    forward_to = child_pid;
    struct sigaction sa = {0};
    sa.sa_handler = forward_signal;
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  }
  char line[8192];
  for (;;) {
    struct pollfd fds[3] = {{sync_fd, POLLIN, 0}, {child_fd, child_fd >= 0 ? POLLIN : 0, 0}, {pidfd, POLLIN, 0}};
    int r = poll(fds, pidfd >= 0 ? 3 : 2, wait_child && pidfd < 0 ? 100 : -1);
    if (r < 0 && errno == EINTR) continue;
    if (wait_child && child_status < 0 && (pidfd < 0 || (fds[2].revents & POLLIN))) {
      int status;
      pid_t w = waitpid(child_pid, &status, pidfd >= 0 ? 0 : WNOHANG);
      if (w == child_pid) {
        child_status = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
        forward_to = 0;
        if (pidfd >= 0) close(pidfd);
        pidfd = -1;
        send_line("exit %d", child_status);
      }
    }
    if (child_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (read_line(child_fd, line, sizeof line)) {
        send_line("%s", line);
      } else {
        close(child_fd);
        child_fd = -1;
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (!read_line(sync_fd, line, sizeof line)) return child_status >= 0 ? child_status : 1;
      if (!strncmp(line, "exit ", 5)) return atoi(line + 5);
      if (!strncmp(line, "stdout ", 7)) copy_bytes(sync_fd, 1, strtoul(line + 7, NULL, 10));
      else if (!strncmp(line, "stderr ", 7)) copy_bytes(sync_fd, 2, strtoul(line + 7, NULL, 10));
      else if (child_fd >= 0) {
        size_t n = strlen(line);
        line[n] = '\n';
        (void)!write(child_fd, line, n + 1);
      }
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: vessel-nsexec <sync-fd>  (run by Vessel's OCI runtime, not by hand)\n");
    return 2;
  }
  sync_fd = atoi(argv[1]);
  reexec_from_sealed_memfd(argv);
  fcntl(sync_fd, F_SETFD, FD_CLOEXEC);

  uint32_t total;
  read_full(sync_fd, &total, 4);
  if (total > 64 * 1024 * 1024) die("plan too large");
  unsigned char *buf = malloc(total);
  read_full(sync_fd, buf, total);
  const unsigned char *p = buf, *end = buf + total;
  uint32_t flags = get_u32(&p, end);
  uint32_t wait_child = get_u32(&p, end);
  struct list pre, post, child;
  decode_list(&p, end, &pre);
  decode_list(&p, end, &post);
  decode_list(&p, end, &child);

  run_list(&pre);
  for (int i = 0; i < n_pending_ns; i++) {
    if (setns(pending_ns[i].fd, pending_ns[i].type) < 0) die("setns %s", pending_ns[i].path);
    close(pending_ns[i].fd);
  }

  int go[2], sv[2];
  if (pipe2(go, O_CLOEXEC) < 0) die("pipe");
  /* the child talks to the runtime through this process (relay below), so that only one
   * process ever reads the runtime's socket */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
  pid_t pid = syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
  if (pid < 0) die("clone with namespace flags 0x%x", flags);
  if (pid == 0) {
    in_child = 1;
    close(go[1]);
    close(sv[0]);
    close(sync_fd);
    sync_fd = sv[1];
    char c;
    if (read(go[0], &c, 1) != 1) _exit(1);
    close(go[0]);
    prctl(PR_SET_PDEATHSIG, 0);
    run_list(&child);
    errno = 0;
    die("plan ended without exec");
  }
  child_pid = pid;
  close(go[0]);
  close(sv[1]);
  if (fifo_fd >= 0) close(fifo_fd); /* only the child may hold it: `start` finds no reader if it died */
  /* the child joins the container's cgroups before it runs; this process stays out of them */
  for (int i = 0; i < n_cgroup_fds; i++) {
    char pidstr[16];
    int len = snprintf(pidstr, sizeof pidstr, "%d", pid);
    if (write(cgroup_fds[i], pidstr, len) != len) die("move pid %d into its cgroup", pid);
    close(cgroup_fds[i]);
  }
  /* post-clone ops name the child's /proc entries through "{pid}" */
  for (uint32_t i = 0; i < post.n; i++) {
    struct op *o = &post.ops[i];
    for (uint32_t a = 1; a < o->argc; a++) {
      char *at = strstr(o->argv[a], "{pid}");
      if (!at) continue;
      char *r = malloc(o->lens[a] + 16);
      *at = 0;
      sprintf(r, "%s%d%s", o->argv[a], pid, at + 5);
      o->argv[a] = r;
      o->lens[a] = strlen(r);
    }
    run_op(o);
  }
  send_line("pid %d", pid);
  if (write(go[1], "g", 1) != 1) die("start child");
  close(go[1]);
  if (console_fd >= 0) close(console_fd);
  return relay(sv[0], wait_child);
}
