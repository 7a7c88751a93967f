package doctor

import (
	"context"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// Off the pod, the network config comes from the ConfigMap the DaemonSet
// mounts: its net-conf.json lands in a private file the subnet manager
// reads, removed afterwards; a missing ConfigMap or key is named.
func TestNetConfFromAPI(t *testing.T) {
	const conf = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	client := fake.NewSimpleClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-flannel", Name: "kube-flannel-cfg"},
		Data:       map[string]string{"net-conf.json": conf, "cni-conf.json": "{}"},
	}, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-flannel", Name: "empty"}})
	path, done, err := NetConfFromAPI(context.Background(), client, "kube-flannel/kube-flannel-cfg")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != conf {
		t.Errorf("%s holds %q (%v), want the ConfigMap's net-conf.json", path, data, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("copy mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	done()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("copy left behind: %v", err)
	}
	for ref, want := range map[string]string{
		"kube-flannel/nosuch": "failed to read net conf: ConfigMap kube-flannel/nosuch",
		"kube-flannel/empty":  "has no net-conf.json key",
	} {
		if _, _, err := NetConfFromAPI(context.Background(), client, ref); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", ref, err, want)
		}
	}
}
