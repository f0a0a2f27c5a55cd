#!/usr/bin/env bash
# Builds Berth, starts berthd on its embedded defaults (root /var/lib/berth, state /run/berth,
# socket /run/berth/berthd.sock) and runs a container through it with the real `ctr`: a busybox
# root filesystem made from the Debian busybox-static binary. berthd keeps running; stop it
# with `kill $(cat /run/berth/berthd.pid)`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prereqs.sh
cargo build --release -p berthd -p berth-shim
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
bin="$PWD/target/release"

if ! [ -S /run/berth/berthd.sock ]; then
  $SUDO mkdir -p /run/berth
  # PATH: berthd finds its shim, containerd-shim-berth-v2, next to itself.
  $SUDO env PATH="$bin:$PATH" sh -c \
    "nohup '$bin/berthd' >/run/berth/berthd.log 2>&1 & echo \$! >/run/berth/berthd.pid"
  for _ in $(seq 100); do [ -S /run/berth/berthd.sock ] && break; sleep 0.1; done
fi

ctr() { $SUDO /usr/bin/ctr --address /run/berth/berthd.sock "$@"; }
ctr version
ctr plugins ls

# A root filesystem of busybox and a few applet links.
rootfs=/var/lib/berth-demo/rootfs
$SUDO mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys" "$rootfs/tmp"
$SUDO cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo ls cat uname hostname; do $SUDO ln -sf busybox "$rootfs/bin/$applet"; done

ctr run --rm --rootfs "$rootfs" berth-demo /bin/sh -c 'echo "hello from a container run by berthd on $(uname -r)"'
echo "berthd is running (pid $(cat /run/berth/berthd.pid), log /run/berth/berthd.log)"
