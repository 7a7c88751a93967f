#!/usr/bin/env bash
# Unpacks Debian's containerd (containerd, ctr, containerd-shim-runc-v2)
# into a cache directory for the image test (test/image), and installs
# Debian's runc. Unpacked, not installed: the package would also register
# a system containerd service, and nothing here needs one; the test starts
# a private containerd of its own and stops it.
#
# Usage: scripts/install-containerd.sh [DIR]   (default
#        /var/cache/flannel-go/containerd-debian); prints DIR/usr/bin.
set -euo pipefail

dir="${1:-${CONTAINERD_DIR:-/var/cache/flannel-go/containerd-debian}}"
if [ -x "$dir/usr/bin/containerd" ] && [ -x "$dir/usr/bin/ctr" ] && [ -x "$dir/usr/bin/containerd-shim-runc-v2" ] && command -v runc >/dev/null; then
  echo "$dir/usr/bin"
  exit 0
fi
if ! command -v runc >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null
fi
work="$(mktemp -d /tmp/containerd-deb.XXXXXX)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && { apt-get download -q containerd >/dev/null 2>&1 || { apt-get update -qq && apt-get download -q containerd >/dev/null; }; })
mkdir -p "$dir"
dpkg-deb -x "$work"/containerd_*.deb "$work/x"
rm -rf "$dir/usr"
mv "$work/x/usr" "$dir/usr"
echo "$dir/usr/bin"
