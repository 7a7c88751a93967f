package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// isPodTarget: a Kubernetes lab names its pods NAMESPACE/NAME.
func isPodTarget(spec *Spec, target string) bool {
	return spec.Kube != nil && strings.Count(target, "/") == 1
}

// kubeClient is the lab's admin client.
func kubeClient(dir string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", KubeconfigPath(dir))
	if err != nil {
		return nil, fmt.Errorf("lab kubeconfig: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}

// kubePodEnter is the nsenter prefix that runs a command of this machine
// in a pod's network namespace (ping, iperf3, tcpdump: tools the pod's
// image may lack), found through a process in the pod's cgroup.
func kubePodEnter(ctx context.Context, dir string, spec *Spec, target string) ([]string, error) {
	ns, name, _ := strings.Cut(target, "/")
	cs, err := kubeClient(dir)
	if err != nil {
		return nil, err
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", target, err)
	}
	if pod.Spec.NodeName == "" {
		return nil, fmt.Errorf("pod %s is not scheduled yet", target)
	}
	pid, err := podPid(spec.Name, pod.Spec.NodeName, string(pod.UID))
	if err != nil {
		return nil, fmt.Errorf("pod %s on %s: %w", target, pod.Spec.NodeName, err)
	}
	return []string{"nsenter", "--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--"}, nil
}

// podPid finds a process of the pod with that UID in its node's cgroup:
// kubelet (cgroupfs driver) puts it at <cgroupRoot>/kubepods[/<qos>]/pod<uid>.
func podPid(lab, node, uid string) (int, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return 0, err
	}
	for _, h := range hs {
		root := filepath.Join(h.Dir, nodeCgroup(lab, node), "pods", "kubepods")
		for _, pat := range []string{"pod" + uid, "*/pod" + uid} {
			dirs, _ := filepath.Glob(filepath.Join(root, pat))
			for _, d := range dirs {
				rel, err := filepath.Rel(h.Dir, d)
				if err != nil {
					continue
				}
				for _, pid := range cgroupPids([]cgroupHierarchy{h}, rel) {
					if exists("/proc/" + strconv.Itoa(pid) + "/ns/net") {
						return pid, nil
					}
				}
			}
		}
	}
	return 0, fmt.Errorf("no process in its cgroup (pod%s under /%s/pods): is it running?", uid, nodeCgroup(lab, node))
}
