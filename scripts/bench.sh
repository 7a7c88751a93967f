#!/usr/bin/env bash
# Throughput benchmark (not part of CI): pod-to-pod iperf3 over each overlay
# backend (vxlan, udp, userspace wireguard, ipsec) as a ratio of VXLAN's and
# divided by node-to-node iperf3 over the bare underlay, both measured in
# the same run on a two-node namespace cluster. Needs root.
# BENCH_RUNS rounds (default 3); BENCH_BACKENDS=vxlan,udp,... measures
# fewer backends; FLANNEL_UPSTREAM_FLANNELD=<upstream flanneld binary> adds
# upstream's udp and vxlan, measured in the same run, and ours / upstream's.
# Then the data paths: host-gw and vxlan on the kernel path and with
# "Datapath": "ebpf", throughput and TCP request/response rate, all with
# --ip-masq, as ratios of the underlay (BENCH_DATAPATH_RUNS rounds, default
# BENCH_RUNS; BENCH_IP_MASQ=false leaves masquerade off); with
# FLANNEL_UPSTREAM_FLANNELD, upstream's host-gw and vxlan too, alternating
# with ours: the kernel path's parity.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/setup.sh --lab
echo "load before: $(uptime)"
go test -count=1 -run '^$' -bench 'OverlayThroughput' -benchtime "${BENCH_RUNS:-3}x" ./test/e2e/ 2>&1 | grep -v '^I[0-9]'
echo "data paths (kernel and eBPF fast path of host-gw and vxlan, --ip-masq on; with FLANNEL_UPSTREAM_FLANNELD also upstream's kernel path):"
go test -count=1 -run '^$' -bench '^BenchmarkDatapath$' -benchtime "${BENCH_DATAPATH_RUNS:-${BENCH_RUNS:-3}}x" -timeout 60m ./test/e2e/ 2>&1 | grep -v '^I[0-9]'
echo "anti-spoofing cost (pod to pod on one bridge, pinned / unpinned, alternating):"
go test -count=1 -run '^$' -bench 'PinningCost' -benchtime "${BENCH_RUNS:-3}x" ./internal/antispoof/ 2>&1 | grep -E '^(pod-to-pod|Benchmark)'
echo "load after: $(uptime)"
