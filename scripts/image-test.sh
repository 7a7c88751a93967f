#!/usr/bin/env bash
# Builds the container image with scripts/image.sh and checks it in a
# private containerd (test/image): flanneld, iptables (the wrapper's choice
# of back end), nft, install-conf, the init containers' commands. Run as
# root after scripts/setup.sh (which unpacks Debian's containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
exec go test -tags image -count=1 -timeout 20m -v "$@" ./test/image
