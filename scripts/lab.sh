#!/usr/bin/env bash
# The main job: a 3-node VXLAN flannel cluster in network namespaces on
# this machine, checked end to end. Needs root. Extra arguments go to
# `flannelctl lab up` (e.g. --nodes 5 --backend host-gw).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/setup.sh --lab
mkdir -p bin
for prog in flanneld flannel flannelctl; do
  go build -o "bin/$prog" "./cmd/$prog"
done
bin/flannelctl lab up --name demo --nodes 3 --backend vxlan "$@"
bin/flannelctl lab check --name demo
cat <<'MSG'

The lab "demo" keeps running. Go on with:
  bin/flannelctl lab status --name demo
  bin/flannelctl lab exec n1-p1 -- ip addr          # any command inside a pod
  bin/flannelctl lab check --name demo              # connectivity, MTU, packet walk
  bin/flannelctl lab down --name demo               # removes everything
MSG
