// Package deploy holds the deployment kit: kube-flannel.yml, the Helm chart
// in chart/flannel, the Dockerfile and the systemd unit for etcd mode. Its
// only code is WithNetworkPolicy, the manifest as an operator turns network
// policy on. Its tests keep the kit consistent with the daemon (flags,
// net-conf.json, CNI config), with itself (the chart renders the manifest)
// and with upstream's chart (every upstream value means what it means
// there), and check it against a real kube-apiserver.
package deploy
