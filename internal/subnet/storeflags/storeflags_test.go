package storeflags

import (
	"flag"
	"slices"
	"testing"
)

// The flags carry upstream flanneld's names and defaults, and reach the
// subnet managers' options field for field.
func TestFlags(t *testing.T) {
	var f Flags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f.Register(fs)
	var names []string
	fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	want := []string{"etcd-cafile", "etcd-certfile", "etcd-endpoints", "etcd-keyfile", "etcd-password", "etcd-prefix", "etcd-username",
		"kube-annotation-prefix", "kube-api-url", "kube-subnet-mgr", "kubeconfig-file", "net-config-path"}
	if !slices.Equal(names, want) {
		t.Errorf("flags %v, want %v", names, want)
	}
	err := fs.Parse([]string{"--etcd-endpoints=http://a:2379,http://b:2379", "--etcd-prefix=/p", "--etcd-cafile=ca", "--etcd-username=u",
		"--kube-api-url=https://k", "--kubeconfig-file=kc", "--net-config-path=nc"})
	if err != nil {
		t.Fatal(err)
	}
	e := f.Etcd()
	if !slices.Equal(e.Endpoints, []string{"http://a:2379", "http://b:2379"}) || e.Prefix != "/p" || e.CAFile != "ca" || e.Username != "u" {
		t.Errorf("etcd options %+v", e)
	}
	k := f.Kube()
	if k.APIURL != "https://k" || k.Kubeconfig != "kc" || k.NetConfPath != "nc" || k.AnnotationPrefix != "flannel.alpha.coreos.com" {
		t.Errorf("kube options %+v", k)
	}
}
