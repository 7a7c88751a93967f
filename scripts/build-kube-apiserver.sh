#!/usr/bin/env bash
# Builds kube-apiserver from the k8s.io/kubernetes module at a pinned release,
# for tests that need a real API server (internal/kubetest). The Go module
# proxy is the only source: k8s.io/kubernetes cannot be built as a dependency
# on its own because its go.mod points the k8s.io staging modules at local
# directories, so a throwaway module pins each of them to its published
# v0.x.y release instead.
#
# Usage: scripts/build-kube-apiserver.sh [KUBE_VERSION]
# Env:   KUBE_VERSION (default v1.37.2), KUBE_BIN_DIR (default
#        /var/cache/flannel-go/kube). Prints the binary path on the last line.
# A binary already in the cache is reused.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

version="${1:-${KUBE_VERSION:-v1.37.2}}"
bindir="${KUBE_BIN_DIR:-/var/cache/flannel-go/kube}"
out="$bindir/kube-apiserver-$version"

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

# v1.X.Y of k8s.io/kubernetes goes with v0.X.Y of its staging modules.
staging="v0.${version#v1.}"
mkdir -p "$bindir"
work="$(mktemp -d /tmp/kube-apiserver-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"

echo "build-kube-apiserver: k8s.io/kubernetes $version (staging $staging) in $work" >&2
cat > go.mod <<GOMOD
module flannel.local/kubeapiserverbuild

go 1.26
GOMOD

modfile="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
if [ -z "$modfile" ] || [ ! -f "$modfile" ]; then
  echo "build-kube-apiserver: cannot fetch the go.mod of k8s.io/kubernetes@$version from the module proxy" >&2
  exit 1
fi
need_go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")"
have_go="$(go env GOVERSION | sed 's/^go//')"
if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n1)" != "$need_go" ]; then
  echo "build-kube-apiserver: k8s.io/kubernetes@$version needs Go $need_go, this Go is $have_go; pick an older KUBE_VERSION" >&2
  exit 1
fi

# Staging modules, from lines like "k8s.io/api => ./staging/src/k8s.io/api".
mapfile -t mods < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$modfile")
if [ ${#mods[@]} -eq 0 ]; then
  echo "build-kube-apiserver: found no staging replacements in $modfile" >&2
  exit 1
fi

{
  echo "require k8s.io/kubernetes $version"
  echo "replace ("
  for m in "${mods[@]}"; do
    # A staging module that was never published at this version cannot be
    # pinned; it is only a problem if kube-apiserver imports it, and then
    # the build below names it.
    if go list -m "$m@$staging" >/dev/null 2>&1; then
      echo "  $m => $m $staging"
    else
      echo "build-kube-apiserver: $m@$staging is not published; left unpinned" >&2
    fi
  done
  echo ")"
} > replace.txt
# Appended only now: go list above reads go.mod and must see it whole.
cat replace.txt >> go.mod

cat > tools.go <<'GOSRC'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GOSRC

go mod tidy >&2
start=$(date +%s)
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
minor="${version#v1.}"; minor="${minor%%.*}"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out.tmp" "$out"
echo "build-kube-apiserver: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
