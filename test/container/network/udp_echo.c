/*
 * udp-echo PORT: answers every datagram on PORT with "from <sender address> <payload>", so a test
 * sees both that the port is served and which address the packet came from (DNAT keeps the
 * client's; the host's userspace proxy sends from the bridge's gateway). Prints "listening" once
 * bound. Built static by test/container/network/e2e.test.ts and bound into a busybox container,
 * whose busybox has neither `nc -u` nor udpsvd.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  if (argc != 2) return fprintf(stderr, "usage: udp-echo PORT\n"), 2;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) return perror("udp-echo: bind"), 1;
  printf("listening\n");
  fflush(stdout);
  for (;;) {
    char in[1024], out[1100];
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(s, in, sizeof in - 1, 0, (struct sockaddr *)&from, &len);
    if (n < 0) continue;
    in[n] = 0;
    int m = snprintf(out, sizeof out, "from %s %s", inet_ntoa(from.sin_addr), in);
    sendto(s, out, (size_t)m, 0, (struct sockaddr *)&from, len);
  }
}
