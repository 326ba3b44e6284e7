/*
 * Blocking I/O on the runtime server's line protocol, shared by the vessel-runc launcher and
 * vessel-nsexec: the launcher becomes vessel-nsexec on the same connection (src/container/server.ts),
 * so both read the same lines ("exit N", "stdout LEN" / "stderr LEN" followed by LEN bytes).
 * Each program includes this once; the functions are static.
 */
#ifndef VESSEL_LINE_IO_H
#define VESSEL_LINE_IO_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* Writes all n bytes (retrying on EINTR and short writes); -1 on error or EOF. */
static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= w;
  }
  return 0;
}

/* Reads one line (without the newline, cut at size - 1 bytes) from fd; returns 0 on EOF/error. */
static int read_line(int fd, char *buf, size_t size) {
  size_t n = 0;
  while (n < size - 1) {
    ssize_t r = read(fd, buf + n, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    if (buf[n] == '\n') break;
    n++;
  }
  buf[n] = 0;
  return 1;
}

/* Copies the next n bytes of `from` to `to`; stops early at EOF or a read error. Bytes `to` does
 * not take are dropped, so the stream stays in step with the protocol. */
static void copy_bytes(int from, int to, size_t n) {
  char buf[8192];
  while (n > 0) {
    ssize_t r = read(from, buf, n < sizeof buf ? n : sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    write_all(to, buf, r);
    n -= r;
  }
}

#endif
