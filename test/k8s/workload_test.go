//go:build kubernetes

package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The workload: one agnhost netexec pod per node (web-<node>), and per
// node a ClusterIP Service (web-<node>) selecting only that pod, so a
// request through it from another node crosses the overlay.
const (
	testNS      = "e2e"
	agnhost     = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	netexecPort = 8080
	// hostPort is where each web pod is also published on its node's
	// address (the portmap plugin of the manifest's CNI configuration).
	hostPort = 18080
)

// webPod is one running workload pod.
type webPod struct {
	name, node string
	ips        []netip.Addr
}

func (p webPod) target() string { return testNS + "/" + p.name }

func podSpec(node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + node, Namespace: testNS, Labels: map[string]string{"app": "web", "node": node}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers: []corev1.Container{{
				Name: "netexec", Image: agnhost, ImagePullPolicy: corev1.PullIfNotPresent,
				Args:  []string{"netexec", fmt.Sprintf("--http-port=%d", netexecPort)},
				Ports: []corev1.ContainerPort{{ContainerPort: netexecPort, HostPort: hostPort}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(netexecPort)}}, PeriodSeconds: 1},
			}},
		},
	}
}

func serviceSpec(node string, dual bool) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + node, Namespace: testNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web", "node": node},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt(netexecPort)}},
		},
	}
	if dual {
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
	}
	return svc
}

// deployWeb creates the namespace, the pods and the Services, and waits
// until every pod is Ready.
func (l *kubeLab) deployWeb(dual bool) map[string]webPod {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err := l.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		l.t.Fatal(err)
	}
	for _, n := range l.nodes {
		if _, err := l.cs.CoreV1().Services(testNS).Create(ctx, serviceSpec(n, dual), metav1.CreateOptions{}); err != nil {
			l.t.Fatal(err)
		}
		if _, err := l.cs.CoreV1().Pods(testNS).Create(ctx, podSpec(n), metav1.CreateOptions{}); err != nil {
			l.t.Fatal(err)
		}
	}
	pods := map[string]webPod{}
	for _, n := range l.nodes {
		pods[n] = l.waitReady(ctx, "web-"+n)
	}
	return pods
}

// waitReady waits until the pod is Ready and returns its addresses.
func (l *kubeLab) waitReady(ctx context.Context, name string) webPod {
	l.t.Helper()
	var last string
	for {
		p, err := l.cs.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
		if err == nil && podIsReady(p) {
			w := webPod{name: name, node: p.Spec.NodeName}
			for _, ip := range p.Status.PodIPs {
				w.ips = append(w.ips, netip.MustParseAddr(ip.IP))
			}
			return w
		}
		if err != nil {
			last = err.Error()
		} else {
			last = string(p.Status.Phase) + " " + describeStatuses(p)
		}
		select {
		case <-ctx.Done():
			l.t.Fatalf("pod %s/%s not ready: %s", testNS, name, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func describeStatuses(p *corev1.Pod) string {
	var s []string
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil {
			s = append(s, c.Name+": "+c.State.Waiting.Reason+" "+c.State.Waiting.Message)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s = append(s, string(c.Type)+": "+c.Message)
		}
	}
	return strings.Join(s, "; ")
}

// recreate deletes a pod and creates it again on the same node, as a
// crashed or rescheduled workload comes back with a new sandbox.
func (l *kubeLab) recreate(t *testing.T, node string) webPod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := "web-" + node
	if err := l.cs.CoreV1().Pods(testNS).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := l.cs.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s not gone: %v", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := l.cs.CoreV1().Pods(testNS).Create(ctx, podSpec(node), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return l.waitReady(ctx, name)
}
