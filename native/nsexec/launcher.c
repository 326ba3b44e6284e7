/*
 * vessel-runc launcher: the executable to give podman (`--runtime .../native/build/vessel-runc`).
 * podman runs the runtime with no PATH in its environment, so `#!/usr/bin/env node` is not
 * reliable; this launcher execs the node binary and the runtime's entry script by the absolute
 * paths recorded when it was built (NODE_BIN and ENTRY_SCRIPT, set by the Makefile).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef NODE_BIN
#error "NODE_BIN must be defined"
#endif
#ifndef ENTRY_SCRIPT
#error "ENTRY_SCRIPT must be defined"
#endif

int main(int argc, char **argv) {
  char **args = calloc(argc + 2, sizeof(char *));
  if (!args) return 127;
  int n = 0;
  args[n++] = (char *)NODE_BIN;
  args[n++] = (char *)ENTRY_SCRIPT;
  for (int i = 1; i < argc; i++) args[n++] = argv[i];
  args[n] = NULL;
  execv(NODE_BIN, args);
  fprintf(stderr, "vessel-runc: cannot run %s: ", NODE_BIN);
  perror(NULL);
  return 127;
}
