/*
 * vessel-ctest: a small multi-call program that runs *inside* containers in Vessel's integration
 * tests (the role of crun's tests/init.c). Static, so a rootfs needs nothing else. Each command
 * prints one fact for the test to assert on.
 *
 *   pid | ppid | hostname | domainname | machine | winsize | id | umask | cwd | env | fds | caps
 *   cat FILE | write FILE TEXT | ls DIR | rlimit NOFILE|NPROC | sleep SECONDS | exit CODE
 *   try SYSCALL          run one syscall (uname mkdir getpid personality chmod sethostname
 *                        unshare mount) and print "ok" or the errno name
 *   alloc MB             allocate and touch MB MiB, print "allocated" (should be OOM killed)
 *   forkbomb             fork children that sleep until fork fails; print "forks N errno E"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errname(int e) {
  switch (e) {
  case EPERM: return "EPERM";
  case EACCES: return "EACCES";
  case ENOSYS: return "ENOSYS";
  case EAGAIN: return "EAGAIN";
  case EROFS: return "EROFS";
  case ENOENT: return "ENOENT";
  case EEXIST: return "EEXIST";
  case EINVAL: return "EINVAL";
  case ENOMEM: return "ENOMEM";
  default: {
    static char b[32];
    snprintf(b, sizeof b, "E%d", e);
    return b;
  }
  }
}

static int cat(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("error %s\n", errname(errno));
    return 1;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
  fclose(f);
  return 0;
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "pid";
  const char *arg = argc > 2 ? argv[2] : "";
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (!strcmp(cmd, "true")) return 0;
  if (!strcmp(cmd, "pid")) return printf("%d\n", getpid()), 0;
  if (!strcmp(cmd, "ppid")) return printf("%d\n", getppid()), 0;
  if (!strcmp(cmd, "hostname") || !strcmp(cmd, "domainname")) {
    struct utsname u;
    uname(&u);
    printf("%s\n", !strcmp(cmd, "hostname") ? u.nodename : u.domainname);
    return 0;
  }
  if (!strcmp(cmd, "machine")) {
    struct utsname u;
    uname(&u);
    printf("%s\n", u.machine);
    return 0;
  }
  if (!strcmp(cmd, "winsize")) {
    struct winsize ws;
    if (ioctl(0, TIOCGWINSZ, &ws) < 0) return printf("error %s\n", errname(errno)), 1;
    printf("%d %d\n", ws.ws_row, ws.ws_col);
    return 0;
  }
  if (!strcmp(cmd, "id")) {
    gid_t g[64];
    int n = getgroups(64, g);
    printf("uid=%d gid=%d groups=", getuid(), getgid());
    for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", g[i]);
    printf("\n");
    return 0;
  }
  if (!strcmp(cmd, "umask")) {
    mode_t m = umask(0);
    printf("%04o\n", m);
    return 0;
  }
  if (!strcmp(cmd, "cwd")) {
    char b[4096];
    printf("%s\n", getcwd(b, sizeof b) ? b : "?");
    return 0;
  }
  if (!strcmp(cmd, "env")) {
    extern char **environ;
    for (char **e = environ; *e; e++) printf("%s\n", *e);
    return 0;
  }
  if (!strcmp(cmd, "fds")) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return printf("error %s\n", errname(errno)), 1;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
      char p[64], t[4096];
      snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
      ssize_t n = readlink(p, t, sizeof t - 1);
      t[n < 0 ? 0 : n] = 0;
      printf("%s %s\n", e->d_name, t);
    }
    closedir(d);
    return 0;
  }
  if (!strcmp(cmd, "caps")) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
      if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp:", 8))
        fputs(line, stdout);
    return 0;
  }
  if (!strcmp(cmd, "cat")) return cat(arg);
  if (!strcmp(cmd, "ls")) {
    DIR *d = opendir(arg);
    if (!d) return printf("error %s\n", errname(errno)), 1;
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') printf("%s\n", e->d_name);
    return 0;
  }
  if (!strcmp(cmd, "write")) {
    int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return printf("error %s\n", errname(errno)), 1;
    const char *t = argc > 3 ? argv[3] : "";
    if (write(fd, t, strlen(t)) < 0) return printf("error %s\n", errname(errno)), 1;
    close(fd);
    printf("ok\n");
    return 0;
  }
  if (!strcmp(cmd, "rlimit")) {
    int r = !strcmp(arg, "NPROC") ? RLIMIT_NPROC : RLIMIT_NOFILE;
    struct rlimit rl;
    getrlimit(r, &rl);
    printf("%llu %llu\n", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    return 0;
  }
  if (!strcmp(cmd, "sleep")) {
    sleep(atoi(arg));
    return 0;
  }
  if (!strcmp(cmd, "exit")) return atoi(arg);
  if (!strcmp(cmd, "try")) {
    int r = 0;
    if (!strcmp(arg, "uname")) {
      struct utsname u;
      r = uname(&u);
    } else if (!strcmp(arg, "mkdir")) {
      r = mkdir("/tmp/ctest-dir", 0755);
      if (r == 0) rmdir("/tmp/ctest-dir");
    } else if (!strcmp(arg, "getpid")) {
      r = getpid() > 0 ? 0 : -1;
    } else if (!strcmp(arg, "personality")) {
      r = personality(argc > 3 ? strtoul(argv[3], NULL, 0) : 0xffffffff);
      if (r > 0) r = 0;
    } else if (!strcmp(arg, "chmod")) {
      r = chmod("/", 0755);
    } else if (!strcmp(arg, "sethostname")) {
      r = sethostname("x", 1);
    } else if (!strcmp(arg, "unshare")) {
      r = unshare(CLONE_NEWUTS);
    } else if (!strcmp(arg, "mount")) {
      r = mount("none", "/tmp", "tmpfs", 0, NULL);
    } else {
      printf("unknown syscall %s\n", arg);
      return 2;
    }
    printf("%s\n", r < 0 ? errname(errno) : "ok");
    return 0;
  }
  if (!strcmp(cmd, "alloc")) {
    long mb = atol(arg);
    for (long i = 0; i < mb; i++) {
      char *p = malloc(1 << 20);
      if (!p) return printf("malloc failed at %ld\n", i), 1;
      memset(p, 1, 1 << 20);
    }
    printf("allocated\n");
    return 0;
  }
  if (!strcmp(cmd, "forkbomb")) {
    int n = 0, err = 0;
    for (; n < 100000; n++) {
      pid_t p = fork();
      if (p < 0) {
        err = errno;
        break;
      }
      if (p == 0) {
        pause();
        _exit(0);
      }
    }
    printf("forks %d errno %s\n", n, errname(err));
    fflush(stdout);
    signal(SIGTERM, SIG_IGN);
    kill(0, SIGTERM);
    while (wait(NULL) > 0) {}
    return 0;
  }
  printf("unknown command %s\n", cmd);
  return 2;
}
