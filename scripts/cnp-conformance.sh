#!/usr/bin/env bash
# Runs the network-policy-api conformance suite
# (sigs.k8s.io/network-policy-api/conformance, profile ClusterNetworkPolicy)
# against the real-Kubernetes lab started with --network-policy, or the
# cluster of --kubeconfig. The suite's test binary is built once from the
# module proxy (at nice 19) and cached beside the Kubernetes binaries.
# Installs the ClusterNetworkPolicy CRD of the suite's bundle, and gives the lab an agnhost image with the tag the suite's pods
# name (nothing is pulled in the lab), fitted to what they need. Prints each test's result and the
# closing "N passed, N failed, N skipped"; not in CI (about 10 minutes).
#
# Usage: scripts/cnp-conformance.sh [--kubeconfig F] [--name NAME] [--out DIR] [-- GO TEST FLAGS]
#   --name NAME  the lab to start, or, with --kubeconfig, the running lab
#                whose nodes get the suite's agnhost image
# Env:   NPAPI_VERSION (default v0.3.0), CRD_CHANNEL (experimental, the
#        default, or standard), FEATURES (default
#        ClusterNetworkPolicy,ClusterNetworkPolicyNamedPorts,ClusterNetworkPolicyEgressNodePeers)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

npapi="${NPAPI_VERSION:-v0.3.0}"
features="${FEATURES:-ClusterNetworkPolicy,ClusterNetworkPolicyNamedPorts,ClusterNetworkPolicyEgressNodePeers}"
bindir="${KUBE_BIN_DIR:-/var/cache/flannel-go/kube}"
kubeconfig="" name="cnp" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kubeconfig) kubeconfig="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "cnp-conformance: unknown argument $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
out="${out:-$(mktemp -d /tmp/cnp-conformance.XXXXXX)}"
mkdir -p "$out"

# build: the suite's test binary, go test -c of the conformance package in
# a throwaway module that requires the released module.
suite="$bindir/npapi-conformance.test-$npapi"
if [ ! -x "$suite" ]; then
  work="$(mktemp -d /tmp/npapi-build.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    # The Kubernetes libraries at the lab's release: the packages the
    # Kubernetes build compiled are reused from the build cache.
    {
      printf 'module flannel.local/npapi\n\ngo 1.26\n\nrequire sigs.k8s.io/network-policy-api %s\n' "$npapi"
      for m in api apimachinery client-go apiextensions-apiserver; do
        printf 'require k8s.io/%s v0.%s\n' "$m" "$(echo "${KUBE_VERSION:-v1.37.2}" | sed 's/^v1\.//')"
      done
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/network-policy-api/conformance/tests"\n' > tools.go
    go mod tidy >&2
    go mod download -json sigs.k8s.io/network-policy-api@"$npapi" >/dev/null
    # The conformance package's own test imports, resolved for it.
    go get -t sigs.k8s.io/network-policy-api/conformance@"$npapi" >&2
    mkdir -p "$bindir"
    CGO_ENABLED=0 nice -n 19 go test -c -vet=off -trimpath -o "$suite" sigs.k8s.io/network-policy-api/conformance
  )
  rm -rf "$work"
  trap - EXIT
fi

if [ -z "$kubeconfig" ]; then
  mkdir -p bin
  for prog in flanneld flannel flannelctl; do go build -o "bin/$prog" "./cmd/$prog"; done
  [ -f bin/flannel-image.tar ] || scripts/image.sh >&2
  trap 'bin/flannelctl lab down --name "$name" >&2' EXIT
  bin/flannelctl lab up --name "$name" --nodes 3 --kubernetes --network-policy >&2
  kubeconfig="$(bin/flannelctl lab kubeconfig --name "$name")"
fi
if bin/flannelctl lab kubeconfig --name "$name" >/dev/null 2>&1; then
  # The suite's pods name agnhost:2.45: the lab's agnhost image (its tools
  # and default command, scripts/build-kube-images.sh) under that tag. This
  # kernel has no SCTP, so the SCTP servers (serve-hostname --sctp, and
  # porter with SERVE_SCTP_PORT_* set) only sleep, or no pod would ever be
  # Ready.
  go build -o "$out/imagebuild" ./scripts/imagebuild
  cat > "$out/agnhost" <<'WRAP'
#!/bin/sh
case "$*" in *--sctp*) exec sleep 2147483647 ;; esac
if [ "$1" = porter ] && env | grep -q '^SERVE_SCTP_PORT_'; then exec sleep 2147483647; fi
exec /agnhost.real "$@"
WRAP
  chmod +x "$out/agnhost"
  src="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION:-v1.37.2}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  "$out/imagebuild" -recipe agnhost -agnhost "$out/agnhost" -porter "$src/test/images/agnhost/porter" -file "/agnhost.real=$bindir/agnhost-${KUBE_VERSION:-v1.37.2}" \
    -cache "${IMAGE_CACHE:-/var/cache/flannel-go/image}" -tag registry.k8s.io/e2e-test-images/agnhost:2.45 -out "$out/agnhost-2.45.tar"
  for node in $(bin/flannelctl lab kubectl --name "$name" -- get nodes -o name | sed 's#node/##'); do
    bin/flannelctl lab exec --name "$name" "$node" -- "${CONTAINERD_DIR:-/var/cache/flannel-go/containerd-v2.2.9}/ctr" -n k8s.io images import "$out/agnhost-2.45.tar" >&2
  done
fi
kubectl="$bindir/kubectl-${KUBE_VERSION:-v1.37.2}"
# The CRD of the suite's own bundle: the experimental channel by default,
# since named ports and node peers (two of FEATURES) exist only there; the
# chart ships the standard channel (CRD_CHANNEL=standard tests with that).
moddir="$(go mod download -json sigs.k8s.io/network-policy-api@"$npapi" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
"$kubectl" --kubeconfig "$kubeconfig" apply --server-side --force-conflicts \
  -f "$moddir/config/crd/${CRD_CHANNEL:-experimental}/policy.networking.k8s.io_clusternetworkpolicies.yaml" >&2
"$kubectl" --kubeconfig "$kubeconfig" wait --for condition=established --timeout=60s crd/clusternetworkpolicies.policy.networking.k8s.io >&2

echo "cnp-conformance: $suite, features $features (log: $out/suite.log)" >&2
# The suite reads its base manifests relative to its package directory.
(
  cd "$moddir/conformance"
  KUBECONFIG="$kubeconfig" go tool test2json -t -p npapi-conformance "$suite" -test.v -test.timeout 2h \
    -test.run TestConformanceProfiles -conformance-profiles ClusterNetworkPolicy \
    -supported-features "$features" -organization flannel-go -project flannel-go -url https://github.com/flannelgo/flannel \
    -version "$(git -C "$OLDPWD" describe --always --dirty)" -contact flannel-go -additional-info "scripts/cnp-conformance.sh of flannel-go (run by hand, not CI)" -report-output "$out/report.yaml" "$@"
) >"$out/suite.json" 2>"$out/suite.log" || true
go run ./scripts/testreport "$out/suite.json" | tee "$out/summary.txt"
