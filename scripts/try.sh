#!/usr/bin/env bash
# Builds Berth (berthd, its shim and the `berth` CLI), starts berthd on its embedded defaults
# (root /var/lib/berth, state /run/berth, socket /run/berth/berthd.sock), imports a busybox
# image made here from the Debian busybox-static binary, and runs it with `berth run` the way
# the Docker workflows do: a named volume filled by one container and served by another, whose
# port 80 is published on 127.0.0.1:8080 through a CNI bridge. berthd and the web container
# keep running; the last lines printed say how to stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-prereqs.sh
cargo build --release -p berthd -p berth-shim -p berth-ctr
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

berth() { $SUDO env PATH="$bin:$PATH" "$bin/berth" --address /run/berth/berthd.sock "$@"; }
berth version

# An OCI image archive of busybox: one gzip layer with /bin/busybox, applet links and an
# /etc/passwd, a config whose command is a shell, a manifest and an index naming the image.
image=docker.io/library/busybox:berth-demo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/www"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo ls cat uname hostname httpd wget sleep date; do ln -sf busybox "$rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
mkdir -p "$work/oci/blobs/sha256"
blob() { # blob FILE -> "sha256:<hex> <size>", and the file stored under blobs/
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  cp "$1" "$work/oci/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
diff_id="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
read -r layer layer_size <<<"$(blob "$work/layer.tar.gz")"
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
  "$diff_id" >"$work/config.json"
read -r config config_size <<<"$(blob "$work/config.json")"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
read -r manifest manifest_size <<<"$(blob "$work/manifest.json")"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"berth-demo"},"platform":{"architecture":"amd64","os":"linux"}}]}' \
  "$manifest" "$manifest_size" "$image" >"$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
tar -C "$work/oci" -cf "$work/busybox.tar" oci-layout index.json blobs
berth images import "$work/busybox.tar"
berth images ls

# A named volume, written by one container and served by another with a published port.
berth tasks rm -f berth-demo-web >/dev/null 2>&1 || true
berth containers rm berth-demo-web >/dev/null 2>&1 || true
berth run --rm -v berth-demo:/www "$image" berth-demo-write \
  sh -c 'echo "hello from a container run by berthd on $(uname -r)" >/www/index.html'
berth run -d --net bridge -v berth-demo:/www:ro -p 127.0.0.1:8080:80 "$image" berth-demo-web \
  httpd -f -p 80 -h /www
for _ in $(seq 50); do
  page=$(busybox wget -q -O - http://127.0.0.1:8080/ 2>/dev/null || true)
  [ -n "$page" ] && break
  sleep 0.1
done
echo "GET http://127.0.0.1:8080/ -> ${page:-(no answer)}"
berth ps
echo
echo "berthd is running (pid $(cat /run/berth/berthd.pid), log /run/berth/berthd.log); berth-demo-web serves 127.0.0.1:8080."
echo "Stop the container:  target/release/berth --address /run/berth/berthd.sock tasks rm -f berth-demo-web && target/release/berth --address /run/berth/berthd.sock containers rm berth-demo-web"
echo "Stop berthd:         kill \$(cat /run/berth/berthd.pid)"
[ -n "${page:-}" ]
