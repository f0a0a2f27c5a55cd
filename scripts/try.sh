#!/usr/bin/env bash
# Builds berthd, starts it on its embedded defaults (root /var/lib/berth, state /run/berth,
# socket /run/berth/berthd.sock) and talks to it with the real `ctr`. berthd keeps running;
# stop it with `kill $(cat /run/berth/berthd.pid)`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prereqs.sh
cargo build --release -p berthd
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO mkdir -p /run/berth
$SUDO sh -c 'nohup target/release/berthd >/run/berth/berthd.log 2>&1 & echo $! >/run/berth/berthd.pid'
for _ in $(seq 50); do [ -S /run/berth/berthd.sock ] && break; sleep 0.1; done
ctr() { $SUDO /usr/bin/ctr --address /run/berth/berthd.sock "$@"; }
ctr version
ctr plugins ls
ctr namespaces create demo team=berth
ctr namespaces ls
echo "berthd is running (pid $(cat /run/berth/berthd.pid), log /run/berth/berthd.log)"
