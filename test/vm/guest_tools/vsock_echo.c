/*
 * vsock_echo PORT MESSAGE: a guest-side vsock client for Vessel's integration tests (busybox has
 * no vsock tool). Connects to the host (CID 2) on PORT, sends MESSAGE, shuts down its sending
 * side, copies what the host answers to stdout until EOF, and exits 0 (1..4 name the failing
 * step). Freestanding i386 code over raw `int $0x80` system calls, so it builds with
 * `gcc -m32 -static -nostdlib -ffreestanding` without an i386 C library on the host.
 */
#define SYS_exit 1
#define SYS_read 3
#define SYS_write 4
#define SYS_socket 359
#define SYS_connect 362
#define SYS_shutdown 373
#define AF_VSOCK 40
#define SOCK_STREAM 1
#define VMADDR_CID_HOST 2
#define SHUT_WR 1

struct sockaddr_vm {
  unsigned short svm_family;
  unsigned short svm_reserved1;
  unsigned int svm_port;
  unsigned int svm_cid;
  unsigned char svm_flags;
  unsigned char svm_zero[3];
};

static long sys3(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
  return r;
}

static void die(int code) {
  sys3(SYS_exit, code, 0, 0);
  for (;;) {
  }
}

static unsigned int length(const char *s) {
  unsigned int n = 0;
  while (s[n] != 0) n++;
  return n;
}

static unsigned int number(const char *s) {
  unsigned int n = 0;
  while (*s >= '0' && *s <= '9') n = n * 10 + (unsigned int)(*s++ - '0');
  return n;
}

static int run(int argc, char **argv) {
  if (argc < 3) return 1;
  long fd = sys3(SYS_socket, AF_VSOCK, SOCK_STREAM, 0);
  if (fd < 0) return 2;
  struct sockaddr_vm addr = {AF_VSOCK, 0, number(argv[1]), VMADDR_CID_HOST, 0, {0, 0, 0}};
  if (sys3(SYS_connect, fd, (long)&addr, sizeof addr) < 0) return 3;
  unsigned int len = length(argv[2]);
  if (sys3(SYS_write, fd, (long)argv[2], len) != (long)len) return 4;
  sys3(SYS_shutdown, fd, SHUT_WR, 0);
  char buf[512];
  for (;;) {
    long n = sys3(SYS_read, fd, (long)buf, sizeof buf);
    if (n <= 0) break;
    sys3(SYS_write, 1, (long)buf, n);
  }
  return 0;
}

/* The kernel enters with argc at (%esp), then argv[]. */
__asm__(".globl _start\n_start:\n  mov %esp, %eax\n  push %eax\n  call start_c\n");

void start_c(long *sp) {
  die(run((int)sp[0], (char **)(sp + 1)));
}
