package lab

import (
	"fmt"
	"path/filepath"
)

// Cluster-wide settings of the Kubernetes lab. The service range and the
// DNS address live only inside the lab's namespaces (kube-proxy's rules).
const (
	kubeClusterCIDR = "10.244.0.0/16"
	kubeServiceCIDR = "10.96.0.0/16"
	kubeDNSAddr     = "10.96.0.10"
	// Their IPv6 twins under --dual-stack.
	kubeClusterCIDR6 = "fd00:10:244::/56"
	kubeServiceCIDR6 = "fd00:10:96::/112"
)

// containerdConfig is the node's containerd configuration (version 3,
// containerd 2.x). Its state directories are the defaults, which the
// node's mount namespace makes its own; the opt directory is not among
// them and is moved into the node's directory (the default,
// /opt/containerd, would be shared by every node and left on the host).
//
// The runc runtime is containerd's default (runc from PATH: Debian's).
//
// restrict_oom_score_adj: this machine's sandbox lacks CAP_SYS_RESOURCE
// even in the bounding set, so no process may lower an OOM score; kubelet
// asks -998 for a pod sandbox and -997 for critical pods (the flannel
// DaemonSet), and runc then fails every such pod with "can't get final
// child's PID from pipe". The setting caps them at containerd's own.
func containerdConfig(n *kubeNode, major int) string {
	if major == 1 {
		return containerd1Config(n)
	}
	return fmt.Sprintf(`version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = %q
  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["/opt/cni/bin"]
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
`, filepath.Join(n.dir, "containerd-opt"), pauseImage)
}

// containerd1Config is the same for containerd 1.6 and 1.7 (version 2 of
// the configuration; Debian's containerd is 1.6). Kubernetes 1.37 still
// runs on it through a fallback that 1.38 removes.
func containerd1Config(n *kubeNode) string {
	return fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %q
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
`, filepath.Join(n.dir, "containerd-opt"), pauseImage)
}

// kubeletConfig is the node's KubeletConfiguration.
//   - failCgroupV1: false: this machine has cgroup v1 (hybrid), which
//     kubelet 1.35 and later refuse otherwise.
//   - cgroupRoot of the node's own: with a shared root every kubelet takes
//     the other nodes' pod cgroups for orphans and removes them.
//   - volumePluginDir away from /usr/libexec, which is the host's.
//   - No authentication or authorization: the lab's API server reaches
//     kubelets on the underlay only, and logs and exec just work.
//   - Evictions only on real exhaustion: the lab shares the machine.
func kubeletConfig(n *kubeNode) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s/pods
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
volumePluginDir: %s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: %s
failSwapOn: false
rotateCertificates: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
`, n.cgroup, filepath.Join(n.dir, "volume-plugins"), n.Addr, kubeDNSAddr, filepath.Join(n.dir, "resolv.conf"))
}

// kubeProxyConfig is the node's KubeProxyConfiguration, iptables mode.
// The conntrack table size and timeouts are the kernel's, not the
// namespace's: zero leaves them alone.
func kubeProxyConfig(n *kubeNode, kubeconfig, clusterCIDRs string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: %s
clusterCIDR: %s
clientConnection:
  kubeconfig: %s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
oomScoreAdj: 0
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, n.Name, clusterCIDRs, kubeconfig)
}

// clusterCIDRs is the pod network: --cluster-cidr of the controller
// manager and kube-proxy.
func (k *KubeSpec) clusterCIDRs() string {
	if k.DualStack {
		return kubeClusterCIDR + "," + kubeClusterCIDR6
	}
	return kubeClusterCIDR
}

// serviceCIDRs is --service-cluster-ip-range (API server, controller
// manager).
func (k *KubeSpec) serviceCIDRs() string {
	if k.DualStack {
		return kubeServiceCIDR + "," + kubeServiceCIDR6
	}
	return kubeServiceCIDR
}

// nodeResolvConf is the resolv.conf kubelet gives pods with dnsPolicy
// Default and CoreDNS forwards to: the lab has no way out, so no server.
const nodeResolvConf = "options ndots:1\n"
