/*
 * vessel-runc launcher: the executable to give podman (`--runtime .../native/build/vessel-runc`).
 *
 * podman runs the runtime with no PATH, several times per container. This launcher finds node
 * and the runtime by the absolute paths recorded when it was built, and avoids a Node start-up
 * per call: it hands its working directory and arguments to the runtime server
 * (src/container/server.ts, started here on first use) over /run/vessel-runc-<hash>.sock and prints
 * what the server answers ("stdout LEN", "stderr LEN", then "exit N"). When the server answers
 * "exec-helper", the launcher becomes vessel-nsexec on the same connection, so the container's
 * init is this process's child (podman's conmon, a subreaper, then inherits it, as with runc).
 * Without a server (or with VESSEL_RUNC_DIRECT=1) it runs `node ENTRY_SCRIPT args...` directly;
 * the server is started from calls that start no container (state, start, kill, delete, ...).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "line_io.h"

#if !defined(NODE_BIN) || !defined(ENTRY_SCRIPT) || !defined(SERVER_SCRIPT) || !defined(NSEXEC_BIN)
#error "NODE_BIN, ENTRY_SCRIPT, SERVER_SCRIPT and NSEXEC_BIN must be defined (see Makefile)"
#endif
#define PROTOCOL "1"

/* One server per checkout: the socket is named by a hash of the server script's path (FNV-1a,
 * the same in src/container/server.ts), so two checkouts on a host never answer each other. */
static char socket_path[108];
static void make_socket_path(void) {
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)SERVER_SCRIPT; *p; p++) h = (h ^ *p) * 16777619u;
  snprintf(socket_path, sizeof socket_path, "/run/vessel-runc-%08x.sock", h);
}

static char **g_argv;
static int g_argc;

static void run_direct(void) {
  char **args = calloc(g_argc + 2, sizeof(char *));
  if (!args) exit(127);
  int n = 0;
  args[n++] = (char *)NODE_BIN;
  args[n++] = (char *)ENTRY_SCRIPT;
  for (int i = 1; i < g_argc; i++) args[n++] = g_argv[i];
  args[n] = NULL;
  execv(NODE_BIN, args);
  fprintf(stderr, "vessel-runc: cannot run %s: %s\n", NODE_BIN, strerror(errno));
  exit(127);
}

static int try_connect(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* no CLOEXEC: it may become the helper's channel */
  if (fd < 0) return -1;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strcpy(a.sun_path, socket_path);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
  close(fd);
  return -1;
}

/* Starts the server detached (its own session, no inherited fds, stdio on /dev/null). */
static void start_server(void) {
  pid_t a = fork();
  if (a < 0) return;
  if (a == 0) {
    if (fork() != 0) _exit(0);
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    syscall(SYS_close_range, 3, ~0U, 0);
    char *args[] = {(char *)NODE_BIN, (char *)SERVER_SCRIPT, NULL};
    char *env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    execve(NODE_BIN, args, env);
    _exit(127);
  }
  waitpid(a, NULL, 0);
}

/* The runc command in argv (after the global flags), or "" */
static const char *command_of(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') return a;
    if (strchr(a, '=')) continue;
    const char *n = a + (a[1] == '-' ? 2 : 1);
    if (!strcmp(n, "root") || !strcmp(n, "log") || !strcmp(n, "log-format") || !strcmp(n, "criu") ||
        !strcmp(n, "rootless"))
      i++;
  }
  return "";
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  make_socket_path();
  const char *direct = getenv("VESSEL_RUNC_DIRECT");
  if ((direct && *direct && strcmp(direct, "0")) || geteuid() != 0) run_direct();
  int fd = try_connect();
  /* The server is started only from calls that start no container: podman's conmon runs
   * create and exec as a child subreaper, and would adopt a server started there. */
  const char *cmd = command_of(argc, argv);
  if (fd < 0 && (!strcmp(cmd, "create") || !strcmp(cmd, "run") || !strcmp(cmd, "exec"))) run_direct();
  if (fd < 0) {
    start_server();
    for (int i = 0; i < 600 && fd < 0; i++) {
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
      fd = try_connect();
    }
    if (fd < 0) run_direct();
  }
  /* request: u32 total, u32 count, count x (u32 len, bytes): protocol, cwd, argv[1..] */
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "/");
  int count = argc + 1;
  const char **f = calloc(count, sizeof(char *));
  f[0] = PROTOCOL;
  f[1] = cwd;
  for (int i = 1; i < argc; i++) f[i + 1] = argv[i];
  size_t total = 4;
  for (int i = 0; i < count; i++) total += 4 + strlen(f[i]);
  char *req = malloc(total + 4), *p = req;
  uint32_t v = total;
  memcpy(p, &v, 4), p += 4;
  v = count;
  memcpy(p, &v, 4), p += 4;
  for (int i = 0; i < count; i++) {
    v = strlen(f[i]);
    memcpy(p, &v, 4), p += 4;
    memcpy(p, f[i], v), p += v;
  }
  if (write_all(fd, req, total + 4) < 0) run_direct();
  char line[256];
  int got_any = 0;
  while (read_line(fd, line, sizeof line)) {
    got_any = 1;
    if (!strcmp(line, "exec-helper")) {
      char fdarg[16];
      snprintf(fdarg, sizeof fdarg, "%d", fd);
      char *args[] = {"vessel-nsexec", fdarg, NULL};
      execv(NSEXEC_BIN, args);
      fprintf(stderr, "vessel-runc: cannot run %s: %s\n", NSEXEC_BIN, strerror(errno));
      return 1;
    }
    if (!strncmp(line, "exit ", 5)) return atoi(line + 5);
    if (!strncmp(line, "stdout ", 7)) copy_bytes(fd, 1, strtoul(line + 7, NULL, 10));
    else if (!strncmp(line, "stderr ", 7)) copy_bytes(fd, 2, strtoul(line + 7, NULL, 10));
  }
  /* the server went away: before it answered anything, the call can be made directly */
  if (!got_any) run_direct();
  fprintf(stderr, "vessel-runc: the runtime server went away during the call\n");
  return 1;
}
