#!/usr/bin/env bash
# Builds flannel's container image without Docker or a registry and writes
# it to bin/flannel-image.tar (a docker-archive: `ctr images import` and
# `docker load` take it). The root file system is Debian packages of this
# machine's release and architecture, downloaded with apt and cached under
# /var/cache/flannel-go/image; the programs are built here with CGO off.
# Same layout as deploy/Dockerfile (upstream flannel's): /opt/bin/flanneld,
# /opt/bin/install-conf, /opt/bin/mk-docker-opts.sh, /flannel.
#
# Env: IMAGE    the image's name (default: the one deploy/kube-flannel.yml
#               names, so the manifest runs it unchanged)
#      VERSION  flannel's version (default: git describe, else v0.0.0-dev)
#      OUT      the tarball (default bin/flannel-image.tar)
#      IMAGE_CACHE  (default /var/cache/flannel-go/image)
# Needs apt-get and dpkg-deb (Debian or a derivative); prints the tarball's
# path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

image="${IMAGE:-$(sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]]*flannel[^[:space:]]*\).*/\1/p' deploy/kube-flannel.yml | head -n1)}"
if [ -z "$image" ]; then
  echo "image.sh: no image: line in deploy/kube-flannel.yml; set IMAGE" >&2
  exit 1
fi
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}"
out="${OUT:-bin/flannel-image.tar}"

bindir="$(mktemp -d /tmp/flannel-image-bin.XXXXXX)"
trap 'rm -rf "$bindir"' EXIT
echo "image.sh: building flanneld, flannel, flannelctl, install-conf ($version)" >&2
# -tags nodeimage: flannelctl without the lab (its embedded etcd and test
# harnesses); a node needs doctor and policy only.
CGO_ENABLED=0 nice -n 10 go build -trimpath -tags nodeimage \
  -ldflags "-s -w -X github.com/flannelgo/flannel/internal/version.Version=$version" \
  -o "$bindir/" ./cmd/flanneld ./cmd/flannel ./cmd/flannelctl ./cmd/install-conf
go build -o "$bindir/imagebuild" ./scripts/imagebuild
nice -n 10 "$bindir/imagebuild" -bin "$bindir" -tag "$image" -version "$version" -out "$out" \
  -cache "${IMAGE_CACHE:-/var/cache/flannel-go/image}"
echo "image.sh: $image, $(du -h "$out" | cut -f1)" >&2
echo "$out"
