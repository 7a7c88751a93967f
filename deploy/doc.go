// Package deploy holds the deployment kit: kube-flannel.yml, the Helm chart
// in chart/flannel, the Dockerfile and the systemd unit for etcd mode. The
// package has no code of its own; its tests keep the kit consistent with
// the daemon (flags, net-conf.json, CNI config) and with itself (the chart
// renders the manifest), and check it against a real kube-apiserver.
package deploy
