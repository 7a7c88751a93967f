#!/usr/bin/env bash
# Scale benchmark (not part of CI): runs the real flanneld (VXLAN, one node
# in a network namespace) against N peer leases and prints, for each N,
# the start-up convergence time, flanneld's RSS (VmRSS / VmHWM from /proc;
# at the end, SCALE_SETTLE=40s after the latency phase, past a 30 s
# reconcile: the steady state, split into anonymous and file-backed, and
# flanneld's CPU share meanwhile) and the new-lease-to-route latency
# p50/p99. etcd mode uses the testbed's etcd; kube mode a real kube-apiserver (built by scripts/setup.sh into
# /var/cache/flannel-go) with N realistic Node objects. Needs root; stops
# itself after SCALE_TIMEOUT. Examples:
#   scripts/scale.sh                          # etcd and kube, N = 1000 5000 10000
#   SCALE_MODES=etcd SCALE_N=10000 scripts/scale.sh
#   scripts/scale.sh -flanneld /path/to/other/flanneld   # compare a binary
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=$(mktemp -d /tmp/flannel-scale-bin.XXXXXX)
trap 'rm -rf "$out"' EXIT
# Built as deploy/Dockerfile builds the shipped binary.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/flanneld" ./cmd/flanneld
go build -o "$out/scale" ./test/scale
"$out/scale" -flanneld "$out/flanneld" \
  -modes "${SCALE_MODES:-etcd,kube}" -n "${SCALE_N:-1000,5000,10000}" \
  -samples "${SCALE_SAMPLES:-200}" -settle "${SCALE_SETTLE:-40s}" -timeout "${SCALE_TIMEOUT:-30m}" "$@"
