// Package storeflags is the one definition of the datastore flags that
// flanneld and `flannelctl doctor` share (the etcd and the Kubernetes
// subnet manager), so that both commands name, default, describe and read
// them alike: doctor must see the datastore exactly as flanneld does.
package storeflags

import (
	"flag"
	"strings"

	etcdmgr "github.com/flannelgo/flannel/internal/subnet/etcd"
	kubemgr "github.com/flannelgo/flannel/internal/subnet/kube"
)

// Flags are upstream flanneld's datastore flags, name for name.
type Flags struct {
	EtcdEndpoints, EtcdPrefix             string
	EtcdKeyfile, EtcdCertfile, EtcdCAFile string
	EtcdUsername, EtcdPassword            string
	KubeSubnetMgr                         bool
	KubeAPIURL, KubeconfigFile            string
	KubeAnnotationPrefix, NetConfigPath   string
}

// Register defines the flags on fs, with upstream's defaults.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.EtcdEndpoints, "etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379", "a comma-delimited list of etcd endpoints")
	fs.StringVar(&f.EtcdPrefix, "etcd-prefix", "/coreos.com/network", "etcd prefix")
	fs.StringVar(&f.EtcdKeyfile, "etcd-keyfile", "", "SSL key file used to secure etcd communication")
	fs.StringVar(&f.EtcdCertfile, "etcd-certfile", "", "SSL certification file used to secure etcd communication")
	fs.StringVar(&f.EtcdCAFile, "etcd-cafile", "", "SSL Certificate Authority file used to secure etcd communication")
	fs.StringVar(&f.EtcdUsername, "etcd-username", "", "username for BasicAuth to etcd")
	fs.StringVar(&f.EtcdPassword, "etcd-password", "", "password for BasicAuth to etcd")
	fs.BoolVar(&f.KubeSubnetMgr, "kube-subnet-mgr", false, "contact the Kubernetes API for subnet assignment instead of etcd")
	fs.StringVar(&f.KubeAPIURL, "kube-api-url", "", "Kubernetes API server URL; when empty, in-cluster config is used")
	fs.StringVar(&f.KubeconfigFile, "kubeconfig-file", "", "kubeconfig file location")
	fs.StringVar(&f.KubeAnnotationPrefix, "kube-annotation-prefix", "flannel.alpha.coreos.com", `Kubernetes annotation prefix; may hold one slash (example.com/flannel gives example.com/flannel-backend-data), else a slash is appended`)
	fs.StringVar(&f.NetConfigPath, "net-config-path", "/etc/kube-flannel/net-conf.json", "path to the network configuration file (kube subnet manager)")
}

// Etcd is what the flags say of the etcd subnet manager.
func (f *Flags) Etcd() etcdmgr.Options {
	return etcdmgr.Options{
		Endpoints: strings.Split(f.EtcdEndpoints, ","), Prefix: f.EtcdPrefix,
		KeyFile: f.EtcdKeyfile, CertFile: f.EtcdCertfile, CAFile: f.EtcdCAFile,
		Username: f.EtcdUsername, Password: f.EtcdPassword,
	}
}

// Kube is what the flags say of the Kubernetes subnet manager; the node's
// identity is the caller's to add.
func (f *Flags) Kube() kubemgr.Options {
	return kubemgr.Options{
		APIURL: f.KubeAPIURL, Kubeconfig: f.KubeconfigFile,
		AnnotationPrefix: f.KubeAnnotationPrefix, NetConfPath: f.NetConfigPath,
	}
}
