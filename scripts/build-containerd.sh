#!/usr/bin/env bash
# Builds containerd, ctr and containerd-shim-runc-v2 for the Kubernetes lab
# from the Go module proxy. Kubernetes 1.36 and later expect containerd 2
# (Debian's 1.6 only works through a fallback that 1.38 removes). CGO off;
# the btrfs, devmapper and zfs snapshotters are left out (they need C
# headers and the lab uses overlayfs).
#
# Usage: scripts/build-containerd.sh [VERSION]
# Env:   CONTAINERD_VERSION (default v2.2.9), KUBE_CONTAINERD_DIR (default
#        /var/cache/flannel-go/containerd-<version>). Prints the directory;
#        a complete directory is reused.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

version="${1:-${CONTAINERD_VERSION:-v2.2.9}}"
dir="${KUBE_CONTAINERD_DIR:-/var/cache/flannel-go/containerd-$version}"
cmds=(containerd ctr containerd-shim-runc-v2)

missing=0
for c in "${cmds[@]}"; do [ -x "$dir/$c" ] || missing=1; done
if [ $missing -eq 0 ]; then
  echo "$dir"
  exit 0
fi

mod=github.com/containerd/containerd/v2
pkgs=()
for c in "${cmds[@]}"; do pkgs+=("$mod/cmd/$c@$version"); done
start=$(date +%s)
tmp="$(mktemp -d "$dir.build.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$dir")"; mktemp -d "$dir.build.XXXXXX"; })"
trap 'rm -rf "$tmp"' EXIT
echo "build-containerd: $mod $version into $dir" >&2
CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
  -ldflags "-s -w -X $mod/version.Version=$version" "${pkgs[@]}"
mkdir -p "$dir"
for c in "${cmds[@]}"; do mv "$tmp/$c" "$dir/$c"; done
echo "build-containerd: built in $(( $(date +%s) - start ))s" >&2
echo "$dir"
