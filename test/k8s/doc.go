// Package k8s is upstream flannel's end-to-end suite ported to the
// Kubernetes lab (`flannelctl lab up --kubernetes`): per backend, flannel
// installed from deploy/ with the image built here, pods on different
// nodes reaching each other, a ClusterIP Service found by CoreDNS, a
// recreated pod, a DaemonSet rollout restart, dual stack, and pod-to-pod
// throughput. Run as root with the tag:
//
//	go test -tags kubernetes -v ./test/k8s
//
// scripts/test.sh runs it after the other end-to-end tests.
package k8s
