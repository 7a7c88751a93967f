#!/usr/bin/env bash
# Installs the pinned Helm CLI used by the chart tests (deploy/), built from
# source with `go install`: only Go and the module proxy are needed, no
# prebuilt download.
#
# Usage: scripts/install-helm.sh [DIR]
# Env:   HELM_VERSION (default v3.22.0), HELM_BIN_DIR (default
#        /var/cache/flannel-go/bin). Prints the binary path on the last line.
#
# Idempotent: a stamp next to the binary records the version built; when it
# matches, nothing is rebuilt and the script returns at once. Concurrent runs
# into the same DIR are serialised with flock, so parallel test packages do
# not build twice.
set -euo pipefail

version="${HELM_VERSION:-v3.22.0}"
dir="${1:-${HELM_BIN_DIR:-/var/cache/flannel-go/bin}}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
bin="$dir/helm"
stamp="$dir/.install-helm.stamp"

export PATH="$PATH:/usr/local/go/bin"

up_to_date() {
  [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]
}

if up_to_date; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "install-helm: go not found in PATH; install Go 1.26 first" >&2; exit 1; }

exec 9>"$dir/.install-helm.lock"
flock 9
# Another run may have finished the build while this one waited for the lock.
if up_to_date; then
  echo "$bin"
  exit 0
fi

rm -f "$stamp"
start=$(date +%s)
echo "install-helm: go install helm.sh/helm/v3/cmd/helm@$version -> $bin (takes a few minutes on 2 cores)" >&2
# Outside any module and workspace, so this repository's go.mod plays no part;
# the version string is stamped so `helm version` reports it.
if ! (cd / && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$dir" \
  go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
  "helm.sh/helm/v3/cmd/helm@$version") >&2; then
  echo "install-helm: building helm $version failed; check that the Go module proxy is reachable (go env GOPROXY)" >&2
  exit 1
fi
echo "$version" >"$stamp"
echo "install-helm: built helm $version in $(( $(date +%s) - start ))s" >&2
echo "$bin"
