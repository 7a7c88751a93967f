package netpol

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkCompile compiles 5000 pods and 1000 policies for a node with
// 250 of the pods.
func BenchmarkCompile(b *testing.B) {
	in := scaleWorld(5000, 1000)
	local := func(p *corev1.Pod) bool { return p.Spec.NodeName == "node3" }
	for b.Loop() {
		Compile(in, local)
	}
}
