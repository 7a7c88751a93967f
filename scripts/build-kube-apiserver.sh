#!/usr/bin/env bash
# Builds kube-apiserver from the k8s.io/kubernetes module at a pinned release,
# for tests that need a real API server (internal/harness/kubetest), with
# scripts/build-kube.sh (the Go module proxy is the only source; see there
# how the staging modules are pinned). 10 to 45 minutes on 2 cores the
# first time; a binary already in the cache is reused.
#
# Usage: scripts/build-kube-apiserver.sh [KUBE_VERSION]
# Env:   KUBE_VERSION (default v1.37.2), KUBE_BIN_DIR (default
#        /var/cache/flannel-go/kube). Prints the binary path on the last line.
set -euo pipefail
version="${1:-${KUBE_VERSION:-v1.37.2}}"
bindir="$(KUBE_COMPONENTS=kube-apiserver "$(dirname "$0")/build-kube.sh" "$version" | tail -n1)"
echo "$bindir/kube-apiserver-$version"
