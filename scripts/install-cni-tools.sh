#!/usr/bin/env bash
# Installs the pinned reference CNI tools used by the tests: cnitool and the
# bridge, host-local, loopback and portmap plugins, built with `go install`
# (only Go and the module proxy are needed).
#
# Usage: scripts/install-cni-tools.sh [DIR]   (default /opt/cni/bin)
#
# Idempotent: a stamp file in DIR records the versions built; when it
# matches and every binary is there, nothing is rebuilt. Concurrent runs
# into the same DIR are serialised with flock.
set -euo pipefail

CNI_VERSION=v1.3.1
PLUGINS_VERSION=v1.9.1

dir=${1:-/opt/cni/bin}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install-cni-tools: go not found in PATH" >&2; exit 1; }

tools=(
  "cnitool github.com/containernetworking/cni/cnitool@${CNI_VERSION}"
  "bridge github.com/containernetworking/plugins/plugins/main/bridge@${PLUGINS_VERSION}"
  "host-local github.com/containernetworking/plugins/plugins/ipam/host-local@${PLUGINS_VERSION}"
  "loopback github.com/containernetworking/plugins/plugins/main/loopback@${PLUGINS_VERSION}"
  "portmap github.com/containernetworking/plugins/plugins/meta/portmap@${PLUGINS_VERSION}"
)
stamp="$dir/.install-cni-tools.stamp"
want="cni=${CNI_VERSION} plugins=${PLUGINS_VERSION}"

up_to_date() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  local t
  for t in "${tools[@]}"; do
    [ -x "$dir/${t%% *}" ] || return 1
  done
}

exec 9>"$dir/.install-cni-tools.lock"
flock 9

if up_to_date; then
  echo "install-cni-tools: $dir already has $want"
  exit 0
fi

rm -f "$stamp"
for t in "${tools[@]}"; do
  name=${t%% *}
  pkg=${t#* }
  echo "install-cni-tools: go install $pkg -> $dir/$name"
  # Outside any module and workspace, so the repository's go.mod plays no
  # part; static binaries run in any namespace or container.
  (cd / && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$dir" go install "$pkg")
done
echo "$want" >"$stamp"
echo "install-cni-tools: installed $want into $dir"
