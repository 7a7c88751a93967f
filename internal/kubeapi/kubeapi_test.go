package kubeapi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/kubeapi"
	"github.com/flannelgo/flannel/internal/netpol"
)

func startServer(t *testing.T) *kubetest.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a kube-apiserver; skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := kubetest.Start(ctx, kubetest.Options{})
	if errors.Is(err, kubetest.ErrUnavailable) {
		tbtest.Unavailable(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop kube-apiserver: %v", err)
		}
	})
	return s
}

func policy(name string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kapi"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}

// TestClientsListWatchAndFeedListInput: the small-scheme clients decode
// lists and watch events of both groups from a real API server, and
// netpol.ListInput reads the same state from them as from a clientset's
// REST clients (flannelctl's).
func TestClientsListWatchAndFeedListInput(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := s.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kapi", Labels: map[string]string{"team": "a"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "kapi", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "none", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}}},
	}
	if _, err := cs.CoreV1().Pods("kapi").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.NetworkingV1().NetworkPolicies("kapi").Create(ctx, policy("first"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	core, err := kubeapi.Core(s.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	netv1, err := kubeapi.Networking(s.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	ours, err := netpol.ListInput(ctx, core.REST, netv1.REST)
	if err != nil {
		t.Fatalf("ListInput from kubeapi clients: %v", err)
	}
	theirs, err := netpol.ListInput(ctx, cs.CoreV1().RESTClient(), cs.NetworkingV1().RESTClient())
	if err != nil {
		t.Fatalf("ListInput from clientset: %v", err)
	}
	for _, in := range []netpol.Input{ours, theirs} {
		if len(in.Policies) != 1 || in.Policies[0].Name != "first" || in.Policies[0].Spec.PodSelector.MatchLabels["app"] != "web" {
			t.Fatalf("policies = %+v, want the one named first selecting app=web", in.Policies)
		}
		if len(in.Pods) != 1 || in.Pods[0].Name != "web" || in.Pods[0].Spec.Containers[0].Ports[0].ContainerPort != 80 {
			t.Fatalf("pods = %+v, want web with port 80", in.Pods)
		}
		if !hasNamespace(in.Namespaces, "kapi", "a") {
			t.Fatalf("namespaces %v lack kapi with team=a", in.Namespaces)
		}
	}

	lw := cache.NewListWatchFromClient(netv1.REST, "networkpolicies", metav1.NamespaceAll, fields.Everything())
	list, err := lw.List(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := list.(*networkingv1.NetworkPolicyList).ResourceVersion
	w, err := lw.Watch(metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := cs.NetworkingV1().NetworkPolicies("kapi").Create(ctx, policy("second"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		p, ok := ev.Object.(*networkingv1.NetworkPolicy)
		if ev.Type != watch.Added || !ok || p.Name != "second" {
			t.Fatalf("watch event %s %T %+v, want Added NetworkPolicy second", ev.Type, ev.Object, ev.Object)
		}
	case <-ctx.Done():
		t.Fatal("no watch event for the new policy within a minute")
	}
}

func hasNamespace(nss []*corev1.Namespace, name, team string) bool {
	for _, n := range nss {
		if n.Name == name && n.Labels["team"] == team {
			return true
		}
	}
	return false
}
