#!/usr/bin/env bash
# Installs the Debian packages Vessel's tests and benchmarks use, then the npm dependencies
# (which also compiles the TypeScript and the native helpers). Idempotent; needs root.
# Each part of the project lists its packages here, with what needs them.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  nasm               # machine-code test payloads, assembled at test time from test/**/*.asm
  qemu-system-x86    # bench: QEMU peers (microvm on KVM, TCG)
  qemu-user-static   # hosts without i386 execution: debootstrap's second stage (binfmt_misc) and the i386 oracle (qemu-i386-static)
  cpio               # tests: cross-check Vessel's initramfs writer
  binutils           # objdump for test diagnostics
  acpica-tools       # tests: iasl -d disassembles Vessel's ACPI tables (src/boot/acpi.ts)
  seabios            # bench/boot-soft: v86 BIOS images
  podman runc crun uidmap slirp4netns fuse-overlayfs   # OCI runtime: podman end to end, runc/crun peers
  iproute2 iptables  # container networking; virtio-net TAP tests (ip addr, ip neigh)
  debootstrap e2fsprogs  # Debian root filesystems for containers and VMs
  libseccomp-dev     # seccomp tests compare against libseccomp's constants
  attr               # container images: setfattr/getfattr for overlayfs opaque directories
  gcc make libc6-dev linux-libc-dev  # native/*: C helpers (bench-exits uses <linux/kvm.h>)
  xz-utils           # soft engine: xz -dc decompresses the bzImage payload (src/boot/kernel_payload.ts)
  python3            # vm run console tests drive a pty with python3's pty module (Node has none)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm run build
fi

# The default guests (Debian kernels + busybox initramfs, cached in ~/.cache/vessel): the tests
# that boot Linux use both, the i386 one on the soft engine and the amd64 one on KVM (and on the
# soft engine once it runs x86-64). A no-op when they are cached.
node bin/vessel.js guest build --arch i386
node bin/vessel.js guest build --arch amd64
