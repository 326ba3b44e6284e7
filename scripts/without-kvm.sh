#!/usr/bin/env bash
# Runs a command as on a host without /dev/kvm (as root): re-executes itself in a private mount
# namespace where /dev is a tmpfs holding only the nodes the tests use, none of them kvm.
# Usage: scripts/without-kvm.sh node scripts/test.mjs engines/kvm
set -euo pipefail
if [ "${VESSEL_IN_NOKVM_NS:-}" != 1 ]; then
  exec env VESSEL_IN_NOKVM_NS=1 unshare -m --propagation private "$0" "$@"
fi
dev=$(mktemp -d)
mount -t tmpfs tmpfs "$dev"
for f in null zero full random urandom tty ptmx; do [ -e /dev/$f ] && touch "$dev"/$f && mount --bind /dev/$f "$dev"/$f; done
mkdir -p "$dev"/pts "$dev"/shm "$dev"/net; mount --bind /dev/pts "$dev"/pts; mount --bind /dev/shm "$dev"/shm; [ -e /dev/net/tun ] && touch "$dev"/net/tun && mount --bind /dev/net/tun "$dev"/net/tun
mount --move "$dev" /dev
exec "$@"
