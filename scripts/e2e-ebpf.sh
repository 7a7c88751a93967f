#!/usr/bin/env bash
# Optional, not part of CI (it doubles the end-to-end phase): the whole
# end-to-end suite with the eBPF fast path on, every host-gw and vxlan
# net-conf.json given "Datapath": "ebpf" (FLANNEL_E2E_DATAPATH). The suite
# is the fast path's specification: what the kernel path does, it must do.
# With FLANNEL_UPSTREAM_FLANNELD=<upstream flanneld binary>, also the
# interop tests with upstream on the other node (scripts/interop.sh).
# Extra arguments go to `go test` (-run, say).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" -ne 0 ]; then
  echo "e2e-ebpf.sh: run as root: the tests create network namespaces and load tc programs" >&2
  exit 1
fi
scripts/setup.sh --lab
export FLANNEL_E2E_DATAPATH=ebpf
go test -count=1 -timeout 40m "$@" ./test/e2e/...
if [ -n "${FLANNEL_UPSTREAM_FLANNELD:-}" ]; then
  scripts/interop.sh "$@"
fi
