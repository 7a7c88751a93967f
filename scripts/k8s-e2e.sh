#!/usr/bin/env bash
# Runs Kubernetes' own e2e tests against the real-Kubernetes lab
# (`flannelctl lab up --kubernetes`, docs/KUBELAB.md): e2e.test of
# k8s.io/kubernetes at the lab's version (scripts/build-kube.sh builds it
# once, at nice 19, into /var/cache/flannel-go/kube), one spec at a time.
# Prints a Markdown table (test, result, time, reason of every skip or
# failure) and closes with "N passed, N failed, N skipped"; exits 1 when a
# spec failed. Not in CI: the suites take from minutes to hours.
#
# Usage: scripts/k8s-e2e.sh [flags] [FOCUS [SKIP]]
#   FOCUS, SKIP    Ginkgo regular expressions over the spec names (default:
#                  every [sig-network] [Conformance] spec; skip none)
#   --kubeconfig F run against the cluster of F instead of starting a lab
#   --network-policy, --helm, --nodes N, --name NAME
#                  the lab's flags (lab up --kubernetes ...; default 3 nodes,
#                  name e2e); the lab is taken down at the end
#   --out DIR      keep the log and reports there (default a new /tmp dir)
#
# Examples (docs/CONFORMANCE.md has the results):
#   scripts/k8s-e2e.sh '\[sig-network\].*\[Conformance\]'
#   scripts/k8s-e2e.sh --network-policy '\[sig-network\] Netpol' '\[Feature:SCTPConnectivity\]'
#   scripts/k8s-e2e.sh '\[sig-network\] (Networking Granular Checks|HostPort)'
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

version="${KUBE_VERSION:-v1.37.2}"
kubeconfig="" name="e2e" nodes=3 out="" labargs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kubeconfig) kubeconfig="$2"; shift 2 ;;
    --network-policy|--helm) labargs+=("$1"); shift ;;
    --nodes) nodes="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -*) echo "k8s-e2e: unknown flag $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    *) break ;;
  esac
done
focus="${1:-\[sig-network\].*\[Conformance\]}"
skip="${2:-}"
out="${out:-$(mktemp -d /tmp/k8s-e2e.XXXXXX)}"
mkdir -p "$out"

bindir="$(KUBE_COMPONENTS=e2e.test nice -n 19 scripts/build-kube.sh "$version" | tail -n1)"
e2e="$bindir/e2e.test-$version"

if [ -z "$kubeconfig" ]; then
  mkdir -p bin
  for prog in flanneld flannel flannelctl; do go build -o "bin/$prog" "./cmd/$prog"; done
  [ -f bin/flannel-image.tar ] || scripts/image.sh >&2
  trap 'bin/flannelctl lab down --name "$name" >&2' EXIT
  bin/flannelctl lab up --name "$name" --nodes "$nodes" --kubernetes "${labargs[@]}" >&2
  kubeconfig="$(bin/flannelctl lab kubeconfig --name "$name")"
fi

# One spec at a time (no ginkgo -p): the machine is shared, and the lab's
# nodes share its two cores. The framework's own checks before the suite
# (nodes Ready, kube-system pods running) stay on.
args=(
  --kubeconfig "$kubeconfig" --provider skeleton
  --ginkgo.focus "$focus" --ginkgo.no-color --ginkgo.v
  --ginkgo.json-report "$out/report.json" --ginkgo.timeout 6h
  --report-dir "$out" --disable-log-dump
)
[ -n "$skip" ] && args+=(--ginkgo.skip "$skip")
echo "k8s-e2e: $e2e ${args[*]} (log: $out/e2e.log)" >&2
start=$(date +%s)
"$e2e" "${args[@]}" >"$out/e2e.log" 2>&1 || true
echo "k8s-e2e: suite ran $(( $(date +%s) - start ))s; focus '$focus' skip '$skip'" >&2
if [ ! -s "$out/report.json" ]; then
  echo "k8s-e2e: e2e.test wrote no report; the end of $out/e2e.log:" >&2
  tail -n 30 "$out/e2e.log" >&2
  exit 1
fi
go run ./scripts/e2ereport "$out/report.json" | tee "$out/table.md"
