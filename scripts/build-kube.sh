#!/usr/bin/env bash
# Builds the Kubernetes programs `flannelctl lab up --kubernetes` runs
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, kubectl) and agnhost, from the k8s.io/kubernetes module at a
# pinned release, with the same scheme as scripts/build-kube-apiserver.sh: a
# throwaway module pins each staging module to its published v0.x.y release.
# All of them are built by one `go build`, so the packages they share are
# compiled once (kubelet alone is about 8 min cold on 2 cores, 2 GB peak).
# The component e2e.test (not built by default; scripts/k8s-e2e.sh asks for
# it) is Kubernetes' e2e suite binary, `go test -c` of a main that links the
# network suites only (test/e2e/network, its netpol, test/e2e/common/network:
# every [sig-network] spec lives there), not the storage, apps and node
# suites nobody runs here.
#
# Usage: scripts/build-kube.sh [KUBE_VERSION]
# Env:   KUBE_VERSION (default v1.37.2), KUBE_BIN_DIR (default
#        /var/cache/flannel-go/kube), KUBE_COMPONENTS (default all of
#        them; scripts/build-kube-apiserver.sh asks for kube-apiserver
#        alone). Binaries are <name>-<version> there; the ones already
#        present are not rebuilt. Prints the directory.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

version="${1:-${KUBE_VERSION:-v1.37.2}}"
bindir="${KUBE_BIN_DIR:-/var/cache/flannel-go/kube}"
read -r -a cmds <<<"${KUBE_COMPONENTS:-kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl agnhost}"

pkgs=()
for c in "${cmds[@]}"; do
  pkg="k8s.io/kubernetes/cmd/$c"
  [ "$c" = agnhost ] && pkg="k8s.io/kubernetes/test/images/agnhost"
  [ -x "$bindir/$c-$version" ] && continue
  if [ "$c" = e2e.test ]; then e2e=1; else pkgs+=("$pkg"); fi
done
e2e="${e2e:-0}"
if [ ${#pkgs[@]} -eq 0 ] && [ "$e2e" = 0 ]; then
  echo "$bindir"
  exit 0
fi

# write_e2e_main DIR: the e2e suite's test main, as test/e2e/e2e_test.go
# has it, linking only the network suites.
write_e2e_main() {
  mkdir -p "$1"
  cat > "$1/e2e_test.go" <<'GO'
package e2e

import (
	"flag"
	"os"
	"testing"

	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"
	testfixtures "k8s.io/kubernetes/test/fixtures"

	_ "k8s.io/kubernetes/test/e2e/common/network"
	_ "k8s.io/kubernetes/test/e2e/feature"
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/e2e/network"
	_ "k8s.io/kubernetes/test/utils/ktesting/format"
)

func TestMain(m *testing.M) {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	testfiles.AddFileSource(testfixtures.GetTestFixturesFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

func TestE2E(t *testing.T) { e2e.RunE2ETests(t) }
GO
}

staging="v0.${version#v1.}"
mkdir -p "$bindir"
work="$(mktemp -d /tmp/kube-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "build-kube: k8s.io/kubernetes $version: ${pkgs[*]}$([ "$e2e" = 1 ] && echo " e2e.test") in $work" >&2

cat > go.mod <<GOMOD
module flannel.local/kubebuild

go 1.26
GOMOD
modfile="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
if [ -z "$modfile" ] || [ ! -f "$modfile" ]; then
  echo "build-kube: cannot fetch the go.mod of k8s.io/kubernetes@$version from the module proxy" >&2
  exit 1
fi
need_go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")"
have_go="$(go env GOVERSION | sed 's/^go//')"
if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n1)" != "$need_go" ]; then
  echo "build-kube: k8s.io/kubernetes@$version needs Go $need_go, this Go is $have_go; pick an older KUBE_VERSION" >&2
  exit 1
fi
# Staging modules, from lines like "k8s.io/api => ./staging/src/k8s.io/api".
mapfile -t mods < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$modfile")
if [ ${#mods[@]} -eq 0 ]; then
  echo "build-kube: found no staging replacements in $modfile" >&2
  exit 1
fi
# A staging module never published at this version cannot be pinned; it
# matters only if a program built here imports it, and then the build
# names it.
{
  echo "require k8s.io/kubernetes $version"
  echo "replace ("
  for m in "${mods[@]}"; do
    if go list -m "$m@$staging" >/dev/null 2>&1; then
      echo "  $m => $m $staging"
    else
      echo "build-kube: $m@$staging is not published; left unpinned" >&2
    fi
  done
  echo ")"
} > replace.txt
# Appended only now: go list above reads go.mod and must see it whole.
cat replace.txt >> go.mod

{
  echo "//go:build tools"
  echo
  echo "package tools"
  echo
  for p in "${pkgs[@]}"; do echo "import _ \"$p\""; done
} > tools.go
[ "$e2e" = 1 ] && write_e2e_main e2e
go mod tidy >&2

start=$(date +%s)
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
minor="${version#v1.}"; minor="${minor%%.*}"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
mkdir out
if [ ${#pkgs[@]} -gt 0 ]; then
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o out/ "${pkgs[@]}"
fi
if [ "$e2e" = 1 ]; then
  CGO_ENABLED=0 go test -c -vet=off -trimpath -ldflags "$ldflags" -o out/e2e.test ./e2e
  pkgs+=(e2e.test)
fi
for f in out/*; do
  mv "$f" "$bindir/$(basename "$f")-$version"
done
echo "build-kube: built ${pkgs[*]} in $(( $(date +%s) - start ))s" >&2
echo "$bindir"
