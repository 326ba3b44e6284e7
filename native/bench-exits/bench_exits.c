/*
 * The PIO-exit loop of bench/exits in C: the reference for what one VM exit costs a VMM written
 * against the raw KVM API. The guest (32-bit protected mode, flat, no paging, no irqchip) runs
 *     mov ecx, N ; mov dx, 0x80 ; 1: out dx, al ; dec ecx ; jnz 1b ; hlt
 * and the VMM answers each KVM_EXIT_IO and re-enters. Prints one JSON line:
 *     {"exits": N, "seconds": S, "us_per_exit": U}
 * Usage: bench-exits [N] [/dev/kvm]
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 100000;
  const char *path = argc > 2 ? argv[2] : "/dev/kvm";
  int kvm = open(path, O_RDWR | O_CLOEXEC);
  if (kvm < 0) die(path);
  if (ioctl(kvm, KVM_GET_API_VERSION, 0) != 12) die("KVM_GET_API_VERSION");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0) die("KVM_SET_TSS_ADDR");
  size_t mem_size = 1 << 20;
  uint8_t *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size, .userspace_addr = (uint64_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
  const uint8_t code[] = {
      0xb9, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24), /* mov ecx, n */
      0x66, 0xba, 0x80, 0x00,                                                       /* mov dx, 0x80 */
      0xee,                                                                         /* 1: out dx, al */
      0x49,                                                                         /* dec ecx */
      0x75, 0xfc,                                                                   /* jnz 1b */
      0xf4,                                                                         /* hlt */
  };
  memcpy(mem + 0x1000, code, sizeof code);
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .db = 1, .s = 1, .g = 1};
  struct kvm_segment ds = cs;
  ds.selector = 16;
  ds.type = 3;
  sregs.cs = cs;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = ds;
  sregs.cr0 = 0x11;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = 0x1000, .rflags = 2, .rsp = 0x8000};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

  uint64_t exits = 0, sum = 0;
  double t0 = 0;
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
    if (run->exit_reason == KVM_EXIT_IO) {
      if (exits++ == 0) t0 = now();
      sum += ((uint8_t *)run)[run->io.data_offset]; /* what a device model reads */
      continue;
    }
    if (run->exit_reason == KVM_EXIT_HLT) break;
    fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
    return 1;
  }
  double secs = now() - t0;
  /* the first exit starts the clock: exits - 1 round trips were timed */
  printf("{\"exits\": %llu, \"seconds\": %.6f, \"us_per_exit\": %.3f, \"checksum\": %llu}\n", (unsigned long long)exits,
         secs, secs * 1e6 / (double)(exits - 1), (unsigned long long)sum);
  return 0;
}
