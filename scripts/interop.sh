#!/usr/bin/env bash
# Optional, not part of CI: proves that our flanneld and upstream flanneld
# carry each other's pods (udp, vxlan, host-gw), a two-node cluster per
# backend with our flanneld on one node and upstream's on the other.
#
# Upstream's binary is not part of this repository: point
# FLANNEL_UPSTREAM_FLANNELD at one (the test fails, not skips, without it).
# Extra arguments go to `go test` (-v, say).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" -ne 0 ]; then
  echo "interop.sh: run as root: the test creates network namespaces and runs flanneld in them" >&2
  exit 1
fi
if [ -z "${FLANNEL_UPSTREAM_FLANNELD:-}" ]; then
  echo "interop.sh: set FLANNEL_UPSTREAM_FLANNELD to an upstream flanneld binary" >&2
  exit 1
fi
exec go test -tags upstream -count=1 -run 'TestUpstreamInterop|TestUpstreamRollingReplacement|TestUpstreamNFTablesTable' "$@" ./test/e2e
