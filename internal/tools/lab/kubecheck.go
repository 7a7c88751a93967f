package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/subnet/kube"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// The pods `lab check` probes from in a Kubernetes lab: one per node, of a
// DaemonSet the check creates once and leaves for the next run.
const (
	probeNamespace = "flannel-lab"
	probeDaemonSet = "probe"
)

// checkKube is `lab check` of a Kubernetes lab: the same connectivity,
// MTU and packet-walk checks, from the probe pods' network namespaces
// (named fl-<lab>-<node>-probe for the checks' duration).
func checkKube(ctx context.Context, out io.Writer, dir string, spec *Spec, tb *recorded) error {
	cs, err := kubeClient(dir)
	if err != nil {
		return err
	}
	c := &checker{spec: spec, tb: tb, out: out, envs: map[string]*subnetenv.Env{}, mtus: map[string]int{},
		leases: func(ctx context.Context) (map[netip.Prefix]lease.Attrs, error) { return kubeLeases(ctx, cs, spec) }}
	fmt.Fprintf(out, "lab %s: Kubernetes, backend %s%s, %d node(s), underlay MTU %d\n",
		spec.Name, spec.Backend, spec.Kube.options(), len(tb.Nodes), spec.UnderlayMTU)
	c.checkKubeProcesses(ctx, cs)
	cleanup, err := c.probePods(ctx, cs)
	defer cleanup()
	if err != nil {
		c.fail("probe pods", err.Error())
		return c.summary()
	}
	c.readKubeNodes(dir)
	conn := c.connectivity(ctx)
	c.mtuBoundaries(ctx, conn)
	c.dataPaths(func(n *testbed.Node) string { return nodeAt(dir, n.Name).root("/run/flannel/subnet.env") })
	c.walk(ctx)
	return c.summary()
}

func (c *checker) checkKubeProcesses(ctx context.Context, cs kubernetes.Interface) {
	c.checkLabProc()
	st, err := clusterState(ctx, cs)
	if err != nil {
		c.fail("API server", err.Error())
		return
	}
	if st.readyNodes != len(c.tb.Nodes) || st.dsReady != len(c.tb.Nodes) {
		c.fail("cluster", st.describe(nil))
		return
	}
	c.pass()
}

// probePods makes sure the probe DaemonSet runs a Ready pod on every node
// and names each pod's network namespace for the checks; cleanup removes
// the names.
func (c *checker) probePods(ctx context.Context, cs kubernetes.Interface) (cleanup func(), err error) {
	var named []string
	cleanup = func() {
		for _, p := range named {
			_ = unix.Unmount(p, unix.MNT_DETACH)
			_ = os.Remove(p)
		}
	}
	if err := ensureProbes(ctx, cs); err != nil {
		return cleanup, err
	}
	pods, err := waitProbes(ctx, cs, len(c.tb.Nodes))
	if err != nil {
		return cleanup, err
	}
	for _, n := range c.tb.Nodes {
		p, ok := pods[n.Name]
		if !ok {
			return cleanup, fmt.Errorf("no probe pod on %s", n.Name)
		}
		pid, err := podPid(c.spec.Name, n.Name, string(p.UID))
		if err != nil {
			return cleanup, err
		}
		ns := n.NS + "-probe"
		path := filepath.Join("/run/netns", ns)
		if err := bindNetns(pid, path); err != nil {
			return cleanup, err
		}
		named = append(named, path)
		tp := &testbed.Pod{Name: n.Name + "-probe", NS: ns, Index: 1, Node: n}
		for _, ip := range p.Status.PodIPs {
			a, err := netip.ParseAddr(ip.IP)
			switch {
			case err != nil:
			case a.Is4():
				tp.IP = a
			default:
				tp.IP6 = a
			}
		}
		c.pods = append(c.pods, tp)
	}
	return cleanup, nil
}

// bindNetns names a process's network namespace as `ip netns attach`
// does: a bind mount of /proc/<pid>/ns/net under /run/netns.
func bindNetns(pid int, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("name pod namespace %s: %w", path, err)
	}
	f.Close()
	if err := unix.Mount("/proc/"+strconv.Itoa(pid)+"/ns/net", path, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("bind pid %d's network namespace to %s: %w", pid, path, err)
	}
	return nil
}

func ensureProbes(ctx context.Context, cs kubernetes.Interface) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: probeNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", probeNamespace, err)
	}
	labels := map[string]string{"app": "flannel-lab-probe"}
	grace := int64(0)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: probeDaemonSet, Namespace: probeNamespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers:                    []corev1.Container{{Name: "pause", Image: pauseImage, ImagePullPolicy: corev1.PullIfNotPresent}},
				},
			},
		},
	}
	_, err = cs.AppsV1().DaemonSets(probeNamespace).Create(ctx, ds, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create DaemonSet %s/%s: %w", probeNamespace, probeDaemonSet, err)
	}
	return nil
}

// waitProbes waits (up to a minute) for a Ready probe pod on each node.
func waitProbes(ctx context.Context, cs kubernetes.Interface, nodes int) (map[string]*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var why string
	for {
		list, err := cs.CoreV1().Pods(probeNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=flannel-lab-probe"})
		byNode := map[string]*corev1.Pod{}
		why = fmt.Sprint(err)
		if err == nil {
			why = ""
			for i := range list.Items {
				p := &list.Items[i]
				if t := podTrouble(p); t != "" || p.DeletionTimestamp != nil {
					why += p.Name + " on " + p.Spec.NodeName + ": " + t + "; "
					continue
				}
				byNode[p.Spec.NodeName] = p
			}
			if len(byNode) == nodes {
				return byNode, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("probe pods (%s/%s) not Ready on every node within a minute: %s", probeNamespace, probeDaemonSet, why)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// readKubeNodes reads each node's subnet.env (in the node's own /run) and
// the probe pods' MTUs.
func (c *checker) readKubeNodes(dir string) {
	for _, n := range c.tb.Nodes {
		kn := nodeAt(dir, n.Name)
		env, err := subnetenv.Read(kn.root("/run/flannel/subnet.env"))
		if err != nil {
			c.fail("subnet.env of "+n.Name, err.Error())
			continue
		}
		c.envs[n.Name] = env
	}
	for _, p := range c.pods {
		m, err := linkMTU(p.NS, "eth0")
		if err != nil {
			c.fail("pod "+p.Name, err.Error())
			continue
		}
		c.mtus[p.Name] = m
	}
}

// kubeLeases reads the leases from the nodes' flannel annotations, by
// IPv4 subnet, as peers see them.
func kubeLeases(ctx context.Context, cs kubernetes.Interface, spec *Spec) (map[netip.Prefix]lease.Attrs, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	cfg := &config.Config{EnableIPv4: true, Network: netip.MustParsePrefix(kubeClusterCIDR)}
	if spec.Kube.DualStack {
		cfg.EnableIPv6, cfg.IPv6Network = true, netip.MustParsePrefix(kubeClusterCIDR6)
	}
	out := map[netip.Prefix]lease.Attrs{}
	var errs []error
	for i := range nodes.Items {
		l, ok, err := kube.NodeLease(&nodes.Items[i], kube.DefaultAnnotationPrefix, cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", nodes.Items[i].Name, err))
		}
		if ok {
			out[l.Subnet] = l.Attrs
		}
	}
	return out, errors.Join(errs...)
}
