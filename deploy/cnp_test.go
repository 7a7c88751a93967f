package deploy

import (
	"bytes"
	"os"
	"testing"
)

const cnpCRD = "clusternetworkpolicies.policy.networking.k8s.io"

func countCRDs(objs []object) int {
	n := 0
	for _, o := range objs {
		if o.kind() == "CustomResourceDefinition" && o.meta("name") == cnpCRD {
			n++
		}
	}
	return n
}

// The chart installs the ClusterNetworkPolicy CRD with netpol.enabled
// only, and not when told another installer owns it; the role grants
// reading the policies with netpol.enabled only (checkClusterRole).
func TestChartClusterNetworkPolicyCRD(t *testing.T) {
	bin := helmBinary(t)
	for _, tc := range []struct {
		sets []string
		want int
	}{
		{nil, 0},
		{[]string{"netpol.enabled=true"}, 1},
		{[]string{"netpol.enabled=true", "netpol.clusterNetworkPolicyCRD=false"}, 0},
	} {
		objs := renderChart(t, bin, tc.sets...)
		if got := countCRDs(objs); got != tc.want {
			t.Errorf("--set %v: %d ClusterNetworkPolicy CRDs, want %d", tc.sets, got, tc.want)
		}
		checkClusterRole(t, objs, len(tc.sets) > 0)
	}
}

// The chart's copy of the CRD is the one the manifest's comment tells
// operators to apply, and it serves the version flanneld watches.
func TestClusterNetworkPolicyCRDFile(t *testing.T) {
	data, err := os.ReadFile("chart/flannel/files/clusternetworkpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeStream(data)
	if err != nil || countCRDs(objs) != 1 {
		t.Fatalf("files/clusternetworkpolicies.yaml: %v, want one CRD %s", err, cnpCRD)
	}
	if !bytes.Contains(data, []byte("name: v1alpha2")) {
		t.Errorf("the CRD does not serve v1alpha2, the version flanneld watches")
	}
	if !bytes.Contains(readFile(t, manifestPath), []byte("kubectl apply -f deploy/chart/flannel/files/clusternetworkpolicies.yaml")) {
		t.Errorf("kube-flannel.yml does not tell how to install the CRD")
	}
}
