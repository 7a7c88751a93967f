package netpol

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// world is the Kubernetes e2e suite's shape: namespaces x, y, z labelled
// ns=<name>, pods a, b, c in each labelled pod=<name>, pod <ns i>/<pod j>
// at 10.244.<i+1>.<j+10>, serving 80 and 81 on TCP and UDP under the names
// serve-<port>-<proto>.
type world struct {
	in  Input
	ips map[string]netip.Addr
}

func newWorld() *world {
	w := &world{ips: map[string]netip.Addr{}}
	for i, ns := range []string{"x", "y", "z"} {
		w.in.Namespaces = append(w.in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: ns, Labels: map[string]string{"ns": ns, "kubernetes.io/metadata.name": ns}}})
		for j, name := range []string{"a", "b", "c"} {
			ip := netip.AddrFrom4([4]byte{10, 244, byte(i + 1), byte(j + 10)})
			w.addPod(ns, name, ip, servePorts(80, 81))
		}
	}
	return w
}

func servePorts(ports ...int32) []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, p := range ports {
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			out = append(out, corev1.ContainerPort{
				Name: fmt.Sprintf("serve-%d-%s", p, strings.ToLower(string(proto))), ContainerPort: p, Protocol: proto})
		}
	}
	return out
}

func (w *world) addPod(ns, name string, ip netip.Addr, ports []corev1.ContainerPort) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}},
		Spec:       corev1.PodSpec{NodeName: "node-" + name, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(),
			PodIPs: []corev1.PodIP{{IP: ip.String()}}},
	}
	w.in.Pods = append(w.in.Pods, p)
	w.ips[ns+"/"+name] = ip
	return p
}

func (w *world) policy(ns, name string, spec networkingv1.NetworkPolicySpec) {
	w.in.Policies = append(w.in.Policies, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec})
}

// allowed compiles for all pods and decides from -> to on port/proto.
func (w *world) allowed(t *testing.T, from, to string, port uint16, proto Proto) bool {
	t.Helper()
	src, ok1 := w.ips[from]
	dst, ok2 := w.ips[to]
	if !ok1 || !ok2 {
		t.Fatalf("unknown pod %s or %s", from, to)
	}
	return Compile(w.in, nil).Decide(src, dst, proto, port).Allowed()
}

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func port(p int) *intstr.IntOrString {
	v := intstr.FromInt32(int32(p))
	return &v
}

func named(n string) *intstr.IntOrString {
	v := intstr.FromString(n)
	return &v
}

func proto(p corev1.Protocol) *corev1.Protocol { return &p }

type probe struct {
	from, to string
	port     uint16
	proto    Proto
	want     bool
}

func (w *world) check(t *testing.T, probes []probe) {
	t.Helper()
	for _, p := range probes {
		if got := w.allowed(t, p.from, p.to, p.port, p.proto); got != p.want {
			t.Errorf("%s -> %s %d/%s: allowed=%v, want %v", p.from, p.to, p.port, p.proto, got, p.want)
		}
	}
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	both        = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)
