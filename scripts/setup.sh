#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine with Go:
# Debian packages (clang, llvm and libbpf-dev for the eBPF programs, etcd, iperf3, iptables, nftables, runc, prometheus for
# promtool and the dashboard test, ...) and the
# pinned reference CNI tools, and (unless --lab) the Kubernetes binaries,
# containerd, the images of the Kubernetes lab, Helm, and Debian's
# containerd for the image test. Idempotent:
# already-present tools are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

pkgs=(clang llvm libbpf-dev etcd-server etcd-client iperf3 iproute2 iptables nftables tcpdump iputils-ping systemd strongswan-charon strongswan-swanctl libcharon-extra-plugins runc busybox-static curl prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scripts/install-cni-tools.sh "${CNI_BIN_DIR:-/opt/cni/bin}"
# flanneld refuses to start without br_netfilter, as upstream does.
if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  echo "setup: loading br_netfilter"
  modprobe br_netfilter
fi
# The Kubernetes tests need a real kube-apiserver, `flannelctl lab up
# --kubernetes` the rest of Kubernetes, containerd and images, and the chart
# tests Helm, all built from source once and cached under
# /var/cache/flannel-go (20 to 40 minutes on a fresh 2-core machine, one
# build at a time and niced: the machine is shared). `setup.sh --lab` skips
# them: the plain lab does not need them.
if [ "${1:-}" != "--lab" ]; then
  echo "setup: Kubernetes binaries (cached after the first build)"
  nice -n 19 scripts/build-kube.sh >/dev/null
  echo "setup: containerd (cached after the first build)"
  nice -n 19 scripts/build-containerd.sh >/dev/null
  echo "setup: pause, agnhost and CoreDNS images (cached after the first build)"
  nice -n 19 scripts/build-kube-images.sh >/dev/null
  echo "setup: helm (cached after the first build)"
  scripts/install-helm.sh >/dev/null
  # The image test (test/image) runs the image in a private containerd:
  # Debian's, unpacked into the cache (no system service), and runc.
  echo "setup: containerd for the image test (cached)"
  scripts/install-containerd.sh >/dev/null
fi
echo "setup: done"
