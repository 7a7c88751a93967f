package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

const annPrefix = "flannel.alpha.coreos.com/"

// runKube measures kube mode against a real kube-apiserver in the hub.
// Node objects accumulate: each size adds the nodes it lacks.
func runKube(ctx context.Context, tb *testbed.Testbed, o *options) ([]row, error) {
	api, err := kubetest.Start(ctx, kubetest.Options{NetNS: tb.Hub.NS, Address: tb.Hub.Addr})
	if err != nil {
		return nil, err
	}
	defer func() { _ = api.Stop() }()
	rc := api.AdminConfig()
	rc.QPS, rc.Burst = 5000, 5000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	n := tb.Nodes[0]
	// An annotation, as the kubelet always sets: upstream flanneld panics
	// (assignment to entry in nil map) on a Node without any.
	own := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}}}
	own.Spec.PodCIDR = subnetAt(maxIndex - 1).String()
	own.Spec.PodCIDRs = []string{own.Spec.PodCIDR}
	if _, err := cs.CoreV1().Nodes().Create(ctx, own, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create own node %s: %w", n.Name, err)
	}
	conf := filepath.Join(n.Dir, "net-conf.json")
	if err := os.WriteFile(conf, []byte(netConf), 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"--kube-subnet-mgr", "--kubeconfig-file=" + api.AdminKubeconfig, "--net-config-path=" + conf}, o.args...)
	env := append([]string{"NODE_NAME=" + n.Name}, o.env...)
	var rows []row
	have := 0 // nodes peer-00001..have exist
	for _, size := range o.sizes {
		if err := syncNodes(ctx, cs, have, size); err != nil {
			return rows, err
		}
		if err := deleteDevice(n.NS); err != nil {
			return rows, err
		}
		r := row{mode: "kube", n: size}
		if r.convergence, err = converge(ctx, tb, n, env, args, size, o.kernelReady); err != nil {
			return rows, err
		}
		err := measure(ctx, tb, n, &r, o, func(i int) error { return createNode(ctx, cs, i) })
		have = size + o.samples
		if serr := tb.StopFlanneld(n); err == nil {
			err = serr
		}
		if err != nil {
			return rows, err
		}
		r.print()
		rows = append(rows, r)
	}
	return rows, nil
}

// syncNodes turns peers 1..have into peers 1..want.
func syncNodes(ctx context.Context, cs kubernetes.Interface, have, want int) error {
	for i := want + 1; i <= have; i++ {
		if err := cs.CoreV1().Nodes().Delete(ctx, nodeName(i), metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("delete node %s: %w", nodeName(i), err)
		}
	}
	return createNodes(ctx, cs, have+1, want)
}

// createNodes creates nodes from..to with a few parallel writers, as a
// cluster's kubelets would register.
func createNodes(ctx context.Context, cs kubernetes.Interface, from, to int) error {
	if from > to {
		return nil
	}
	start := time.Now()
	next := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := createNode(ctx, cs, i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	var err error
feed:
	for i := from; i <= to; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err == nil {
		fmt.Fprintf(os.Stderr, "created nodes %d..%d in %s\n", from, to, time.Since(start).Round(time.Millisecond))
	}
	return err
}

func nodeName(i int) string { return fmt.Sprintf("peer-%05d", i) }

func createNode(ctx context.Context, cs kubernetes.Interface, i int) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Nodes().Create(rctx, realisticNode(i), metav1.CreateOptions{FieldManager: "kubelet"}); err != nil {
		return fmt.Errorf("create node %s: %w", nodeName(i), err)
	}
	return nil
}

// realisticNode is a Node as a kubelet and flanneld leave it in a
// production cluster: labels, flannel's and others' annotations, a pod
// CIDR, and a status with addresses, conditions, capacity, node info and
// 50 container images.
func realisticNode(i int) *corev1.Node {
	name := nodeName(i)
	cidr := subnetAt(i).String()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "m5.2xlarge", "beta.kubernetes.io/instance-type": "m5.2xlarge",
				"topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": fmt.Sprintf("eu-west-1%c", 'a'+i%3),
				"failure-domain.beta.kubernetes.io/region": "eu-west-1", "node-role.kubernetes.io/worker": "",
				"pool": fmt.Sprintf("pool-%d", i%7),
			},
			Annotations: map[string]string{
				annPrefix + "backend-type": "vxlan", annPrefix + "backend-data": backendData(i),
				annPrefix + "kube-subnet-manager": "true", annPrefix + "public-ip": publicIPAt(i).String(),
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
				"csi.volume.kubernetes.io/nodeid":                        fmt.Sprintf(`{"ebs.csi.aws.com":"i-%017x"}`, i),
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}, ProviderID: fmt.Sprintf("aws:///eu-west-1a/i-%017x", i)},
	}
	node.Status = nodeStatus(i, name)
	return node
}

func nodeStatus(i int, name string) corev1.NodeStatus {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	res := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32408772Ki"),
		corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("104845292Ki"),
		"hugepages-1Gi": resource.MustParse("0"), "hugepages-2Mi": resource.MustParse("0"),
	}
	st := corev1.NodeStatus{
		Capacity: res, Allocatable: res, Phase: corev1.NodeRunning,
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: publicIPAt(i).String()},
			{Type: corev1.NodeHostName, Address: name},
			{Type: corev1.NodeInternalDNS, Address: name + ".eu-west-1.compute.internal"},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: fmt.Sprintf("%032x", i), SystemUUID: fmt.Sprintf("ec2%029x", i), BootID: fmt.Sprintf("%032x", i*7),
			KernelVersion: "6.1.0-13-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.13",
			KubeletVersion: "v1.30.2", KubeProxyVersion: "v1.30.2", OperatingSystem: "linux", Architecture: "amd64",
		},
	}
	for _, c := range []struct {
		t      corev1.NodeConditionType
		s      corev1.ConditionStatus
		reason string
		msg    string
	}{
		{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
		{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status. AppArmor enabled"},
	} {
		st.Conditions = append(st.Conditions, corev1.NodeCondition{
			Type: c.t, Status: c.s, Reason: c.reason, Message: c.msg, LastHeartbeatTime: now, LastTransitionTime: now,
		})
	}
	for j := range 50 {
		repo := fmt.Sprintf("registry.example.com/team-%d/service-%d", j%9, j)
		st.Images = append(st.Images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("%s@sha256:%064x", repo, j*7919+i%3), fmt.Sprintf("%s:v1.%d.%d", repo, j%13, i%3)},
			SizeBytes: int64(20_000_000 + j*1_234_567),
		})
	}
	return st
}
