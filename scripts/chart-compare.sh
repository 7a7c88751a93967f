#!/usr/bin/env bash
# Compares deploy/chart/flannel with upstream flannel's Helm chart, which
# this repository does not carry: renders both with the same values (each
# chart's defaults and the variant files in deploy/testdata/chart-values)
# and checks every field of every object, allowing only the differences
# listed in deploy/chartdiff_test.go (fromUpstreamChart) and
# deploy/README.md; renders ours with upstream's own values.yaml; and, on a
# real kube-apiserver, upgrades a release installed from upstream's chart
# to ours.
#
# Usage: scripts/chart-compare.sh UPSTREAM_CHART_DIR
#   UPSTREAM_CHART_DIR is chart/kube-flannel of a checkout of upstream
#   flannel (the directory holding its Chart.yaml and values.yaml).
# It fetches nothing. Helm comes from scripts/install-helm.sh, the API
# server from scripts/build-kube-apiserver.sh (as for the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ $# -ne 1 ] || [ ! -f "$1/Chart.yaml" ] || [ ! -f "$1/values.yaml" ]; then
  echo "usage: $0 UPSTREAM_CHART_DIR (upstream flannel's chart/kube-flannel, with Chart.yaml and values.yaml)" >&2
  exit 2
fi
upstream="$(cd "$1" && pwd)"
echo "chart-compare: upstream chart $(sed -n 's/^version: //p' "$upstream/Chart.yaml") at $upstream" >&2
FLANNEL_UPSTREAM_CHART="$upstream" exec go test -tags upstreamchart -count=1 -v \
  -run '^(TestChartAgainstUpstream|TestHelmUpgradeFromAnUpstreamRelease)$' ./deploy/
