#!/usr/bin/env bash
# Installs the Debian packages Berth's tests and demo use. Idempotent: does nothing when all are
# present. Needs root (or sudo).
set -euo pipefail

packages=(
  containerd      # the real `ctr` client, and a reference containerd for comparisons
  runc            # the OCI runtime the shim drives
  crun            # the second OCI runtime binary (runc options' BinaryName = crun; runtime tests run both)
  busybox-static  # the tests build their image from it
  btrfs-progs     # mkfs.btrfs for the btrfs snapshotter tests (on a loop device)
  docker-registry # a real registry on 127.0.0.1 for pull and push tests
  apache2-utils   # htpasswd, for the registry's basic auth
  openssl         # a test CA and server certificate for the HTTPS registry
  containernetworking-plugins iptables iproute2 gcc libc6-dev # CRI tests: CNI plugins, iptables-save, ip, cc -static for the pause program
  qemu-system-x86 thin-provisioning-tools dmsetup e2fsprogs xfsprogs # devmapper guest (integration/src/guest): QEMU, thin_ls/thin_dump, dmsetup, mkfs.ext4 and mkfs.xfs copied into it
  systemd         # systemd-analyze, which verifies berthd.service (integration/tests/systemd_unit.rs)
)

# The devmapper guest's kernel: Debian's linux-image-amd64 kernel package (the versioned
# linux-image-<abi>-amd64 it depends on), downloaded and unpacked -- not installed -- into
# /var/cache/berth-guest/root (boot/vmlinuz-*, lib/modules/<abi>/); integration/src/guest reads
# it from there ($BERTH_GUEST_KERNEL_ROOT overrides). Skipped once a kernel is unpacked there.
guest_cache=/var/cache/berth-guest
if ! compgen -G "$guest_cache/root/boot/vmlinuz-*" >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  if [ -z "$kpkg" ]; then
    $SUDO apt-get update -q
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
  echo "downloading the guest kernel: $kpkg (unpacked into $guest_cache/root)"
  $SUDO mkdir -p "$guest_cache"
  (cd "$guest_cache" && $SUDO rm -f ./*.deb && $SUDO apt-get download -q -o APT::Sandbox::User=root "$kpkg")
  $SUDO rm -rf "$guest_cache/root.tmp"
  $SUDO dpkg-deb -x "$guest_cache"/"$kpkg"_*.deb "$guest_cache/root.tmp"
  $SUDO mv "$guest_cache/root.tmp" "$guest_cache/root"
  $SUDO rm -f "$guest_cache"/*.deb
fi

# Python gRPC for the stock grpcio client test (integration/clients/grpcio_client.py). grpcio
# sends the socket path as :authority on unix sockets from 1.57 on, which is what the test needs.
if ! python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  echo "installing: grpcio grpcio-tools (pip)"
  python3 -m pip install --quiet --disable-pip-version-check 'grpcio>=1.57' 'grpcio-tools>=1.57'
fi

# cargo-fuzz for scripts/fuzz.sh (the fuzz targets in fuzz/): about 30 s to build on 2 cores.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz (cargo install)"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# crun refuses a cgroup v1 host whose cgroup2 hierarchy (/sys/fs/cgroup/unified) holds
# controllers ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"); on
# this VM that is hugetlb, which no v1 hierarchy has. Each such controller gets a v1 hierarchy.
unified=/sys/fs/cgroup/unified
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] && [ -n "$(cat "$unified/cgroup.controllers" 2>/dev/null)" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  for c in $(cat "$unified/cgroup.controllers"); do
    echo "moving the $c cgroup controller to a v1 hierarchy (for crun)"
    $SUDO mkdir -p "/sys/fs/cgroup/$c"
    $SUDO mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
  done
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# The Debian containerd package starts its own daemon; the tests run private ones instead.
$SUDO systemctl disable --now containerd docker-registry >/dev/null 2>&1 || true
