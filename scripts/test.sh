#!/usr/bin/env bash
# The whole test suite: set-up, static checks, unit tests and the
# end-to-end tests on network-namespace clusters.
#
# It cannot pass by skipping: it stops at once when not run as root or when
# a tool the suite needs is missing (listing all of them), and with CI=true
# every skipped test is a failure, except one whose message starts with
# "kernel lacks " (a kernel feature this machine does not have); those are
# listed with their reasons at the end of every run, before the closing
# line "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root: the tests create network namespaces, veths and firewall rules" >&2
  exit 1
fi

# Install failures (apt, the CNI tools, kube-apiserver, Helm) end the run
# here: set -e.
scripts/setup.sh

# Every tool the suite uses, where the tests look for it.
kube_apiserver="${KUBE_APISERVER:-${KUBE_BIN_DIR:-/var/cache/flannel-go/kube}/kube-apiserver-v1.37.2}"
helm="${HELM_BIN_DIR:-/var/cache/flannel-go/bin}/helm"
cni="${CNI_BIN_DIR:-/opt/cni/bin}"
containerd="${CONTAINERD_DIR:-/var/cache/flannel-go/containerd-debian}/usr/bin"
need=(go ip bridge ping nft iptables ip6tables tcpdump iperf3 unshare mount systemd-analyze
  /usr/bin/etcd /usr/lib/ipsec/charon "$cni/bridge" "$cni/host-local" "$cni/loopback" "$cni/portmap" "$cni/cnitool"
  "$kube_apiserver" "$helm" clang apt-get dpkg-deb runc promtool prometheus "$containerd/containerd" "$containerd/ctr" "$containerd/containerd-shim-runc-v2")
missing=()
for t in "${need[@]}"; do
  if [[ "$t" == /* ]]; then [ -x "$t" ] || missing+=("$t"); else command -v "$t" >/dev/null || missing+=("$t"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: missing tools (scripts/setup.sh should have installed them):" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

echo "== go vet"
go vet ./...
go vet -tags image ./test/image
go vet -tags kubernetes ./test/k8s
echo "== gofmt"
unformatted=$(gofmt -l cmd internal test deploy scripts 2>/dev/null || true)
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
echo "== eBPF objects match their C sources"
scripts/bpf-check.sh

: >/tmp/flannel-unit.log
: >/tmp/flannel-e2e.log
: >/tmp/flannel-k8s.log
report=$(mktemp -d)
trap 'rm -rf "$report"' EXIT
go build -o "$report/testreport" ./scripts/testreport

# go test -json, one line per finished test on the console (with the
# output of failures), go test's text appended to a log, the raw stream
# kept for the verdict.
run() {
  local name=$1 log=$2; shift 2
  local rc=0
  go test -json "$@" 2>&1 | tee "$report/$name.json" | "$report/testreport" -progress -log "$log" || rc=$?
  return "$rc"
}

# The Kubernetes lab's test (cmd/flannelctl) installs flannel from the
# image, as a user would: build it first (about a minute once cached).
echo "== flannel image for the Kubernetes lab test (scripts/image.sh)"
scripts/image.sh >/tmp/flannel-image.log 2>&1 || { echo "scripts/image.sh failed:"; tail -20 /tmp/flannel-image.log; exit 1; }
export FLANNEL_IMAGE_TAR="$PWD/bin/flannel-image.tar"
echo "== unit and component tests (-race; log: /tmp/flannel-unit.log)"
rc=0
run unit /tmp/flannel-unit.log -race -count=1 -timeout 15m $(go list ./... | grep -v /test/e2e) || rc=$?
# The policy compiler's CPU budgets hold for the binary flanneld ships,
# which has no race detector (it inflates CPU time several-fold).
echo "== CPU budgets of the policy compiler (without -race)"
run budgets /tmp/flannel-unit.log -count=1 -timeout 5m -run 'TestScale' ./internal/netpol || rc=$?
echo "== fuzz tests (a few seconds each, on the seed corpus and beyond)"
# Counted, not timed: with a duration, Go's fuzz coordinator can report its
# own end-of-time as "context deadline exceeded" on a loaded machine
# (golang/go#75804, unfixed in Go 1.26); a count has no deadline to race.
run fuzz-lease-key /tmp/flannel-unit.log -run '^$' -fuzz '^FuzzParseKey$' -fuzztime 100000x ./internal/lease || rc=$?
run fuzz-lease-value /tmp/flannel-unit.log -run '^$' -fuzz '^FuzzDecodeValue$' -fuzztime 100000x ./internal/lease || rc=$?
run fuzz-subnetenv /tmp/flannel-unit.log -run '^$' -fuzz '^FuzzParse$' -fuzztime 100000x ./internal/subnetenv || rc=$?
echo "== end-to-end tests (log: /tmp/flannel-e2e.log)"
run e2e /tmp/flannel-e2e.log -count=1 -timeout 25m -v ./test/e2e/... || rc=$?
# About a minute once the Go build cache and the Debian layer
# (/var/cache/flannel-go/image) are warm; on a cold machine the CGO-off
# build of the four programs adds about 4 minutes and the packages'
# download about 1.
echo "== image test (scripts/image.sh, then the image in a private containerd; log: /tmp/flannel-e2e.log)"
run image /tmp/flannel-e2e.log -tags image -count=1 -timeout 20m -v ./test/image || rc=$?
# Upstream's e2e matrix on the Kubernetes lab: one lab per backend, flannel
# installed from deploy/ with the image built above.
echo "== Kubernetes end-to-end tests (test/k8s; log: /tmp/flannel-k8s.log)"
run k8s /tmp/flannel-k8s.log -tags kubernetes -count=1 -timeout 45m -v ./test/k8s || rc=$?

verdict=0
"$report/testreport" "$report"/*.json || verdict=$?
if [ "$rc" -ne 0 ] || [ "$verdict" -ne 0 ]; then
  echo "test suite failed (go test exit $rc, verdict exit $verdict); logs: /tmp/flannel-unit.log, /tmp/flannel-e2e.log, /tmp/flannel-k8s.log"
  exit 1
fi
