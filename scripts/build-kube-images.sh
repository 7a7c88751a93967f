#!/usr/bin/env bash
# Assembles the container images the Kubernetes lab imports into every
# node's containerd, since no registry can be reached: the pause image (a
# tiny static program, scripts/kubeimages/pause), agnhost under the name
# and tag Kubernetes' own e2e tests use (test/utils/image/manifest.go of
# the release), and CoreDNS at the version kubeadm of that release deploys.
# Each is a docker-archive (go-containerregistry): pause, busybox and CoreDNS
# written by scripts/kubeimages; agnhost (the program from
# scripts/build-kube.sh) and glibc-dns-testing by scripts/imagebuild over
# Debian packages of the tools the e2e suites' commands call (curl,
# netcat-openbsd, dig, getent, bash; internal/imagebuild/recipes.go), with
# agnhost's default command `pause` as upstream's image has.
# An archive's file name changes whenever its recipe does, so that a
# cached archive of an older recipe is rebuilt rather than reused.
#
# Usage: scripts/build-kube-images.sh
# Env:   IMAGE_DIR (default /var/cache/flannel-go/images), KUBE_VERSION,
#        KUBE_BIN_DIR as scripts/build-kube.sh. Prints the directory;
#        archives already there are reused.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
here="$(cd "$(dirname "$0")" && pwd)"

version="${KUBE_VERSION:-v1.37.2}"
kubedir="${KUBE_BIN_DIR:-/var/cache/flannel-go/kube}"
dir="${IMAGE_DIR:-/var/cache/flannel-go/images}"
# Of k8s.io/kubernetes v1.37.2: test/utils/image/manifest.go (pause, agnhost)
# and cmd/kubeadm/app/constants (CoreDNS).
pause_tag=3.10.2
agnhost_tag=2.66.1
glibc_dns_tag=2.1.1
busybox_tag=1.37.0-2
coredns_version=v1.14.6

mkdir -p "$dir"
tool="$dir/.tools"
mkdir -p "$tool"
if [ ! -x "$tool/kubeimages" ] || [ ! -x "$tool/pause" ]; then
  (cd "$here/kubeimages" && CGO_ENABLED=0 go build -trimpath -o "$tool/kubeimages" . &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tool/pause" ./pause)
fi

if [ ! -f "$dir/pause-$pause_tag.tar" ]; then
  "$tool/kubeimages" -o "$dir/pause-$pause_tag.tar" -tag "registry.k8s.io/pause:$pause_tag" \
    -entrypoint /pause -file "/pause=$tool/pause"
fi

if [ ! -f "$dir/agnhost-$agnhost_tag-r4.tar" ] || [ ! -f "$dir/glibc-dns-testing-$glibc_dns_tag-r2.tar" ]; then
  agnhost="$kubedir/agnhost-$version"
  [ -x "$agnhost" ] || { echo "build-kube-images: $agnhost missing: run scripts/build-kube.sh first" >&2; exit 1; }
  (cd "$here/.." && go build -o "$tool/imagebuild" ./scripts/imagebuild)
  cache="${IMAGE_CACHE:-/var/cache/flannel-go/image}"
  # porter's TLS certificate and key, from the source agnhost was built of.
  src="$(cd "$here/.." && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  "$tool/imagebuild" -recipe agnhost -agnhost "$agnhost" -porter "$src/test/images/agnhost/porter" -cache "$cache" -version "$agnhost_tag" \
    -tag "registry.k8s.io/e2e-test-images/agnhost:$agnhost_tag" -out "$dir/agnhost-$agnhost_tag-r4.tar"
  "$tool/imagebuild" -recipe glibc-dns-testing -cache "$cache" -version "$glibc_dns_tag" \
    -tag "registry.k8s.io/e2e-test-images/glibc-dns-testing:$glibc_dns_tag" -out "$dir/glibc-dns-testing-$glibc_dns_tag-r2.tar"
fi

if [ ! -f "$dir/busybox-$busybox_tag.tar" ]; then
  [ -x /bin/busybox ] || { echo "build-kube-images: /bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }
  links=()
  for l in sh ls cat echo ping wget nslookup ip sleep nc hostname test seq grep; do links+=(-link "/bin/$l=busybox"); done
  "$tool/kubeimages" -o "$dir/busybox-$busybox_tag.tar" -tag "registry.k8s.io/e2e-test-images/busybox:$busybox_tag" \
    -cmd sh -file /bin/busybox=/bin/busybox "${links[@]}"
fi

if [ ! -f "$dir/coredns-$coredns_version.tar" ]; then
  if [ ! -x "$tool/coredns-$coredns_version" ]; then
    echo "build-kube-images: building github.com/coredns/coredns $coredns_version" >&2
    CGO_ENABLED=0 GOBIN="$tool/gobin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$coredns_version"
    mv "$tool/gobin/coredns" "$tool/coredns-$coredns_version"
  fi
  "$tool/kubeimages" -o "$dir/coredns-$coredns_version.tar" -tag "registry.k8s.io/coredns/coredns:$coredns_version" \
    -entrypoint /coredns -file "/coredns=$tool/coredns-$coredns_version"
fi
echo "$dir"
