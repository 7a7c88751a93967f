package subnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/harness/kubetest"
	"github.com/flannelgo/flannel/internal/harness/leasewatch"
	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/leaseset"
	"github.com/flannelgo/flannel/internal/subnet"
	"github.com/flannelgo/flannel/internal/subnet/etcd"
	"github.com/flannelgo/flannel/internal/subnet/kube"
)

const netConf = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

// datastore is one manager with a way to write other nodes' leases behind
// its back, as their flanneld would.
type datastore struct {
	mgr subnet.Manager
	put func(t *testing.T, l lease.Lease) // create or overwrite
	del func(t *testing.T, l lease.Lease)
}

// The contract of WatchLeases (subnet.go) and of the events a backend is
// handed (lease.Event), held for both managers by one test: the first
// batch lists every lease as Added with its attributes; a new lease and a
// changed one come as Added with the attributes now stored; a deleted
// one as Removed naming its subnets (etcd has no value left to give);
// every subnet is a network address, so the key parses back to it; and
// through the daemon's lease set the backend's Removed event carries the
// attributes it was last given, from either datastore.
func TestWatchLeasesContract(t *testing.T) {
	for _, m := range []struct {
		name string
		open func(*testing.T) datastore
	}{{"etcd", etcdStore}, {"kube", kubeStore}} {
		t.Run(m.name, func(t *testing.T) {
			checkContract(t, m.open(t))
		})
	}
}

func checkContract(t *testing.T, ds datastore) {
	a := peer("10.244.5.0/24", "198.51.100.15", "ae:00:00:00:00:05")
	ds.put(t, a)
	backend := &handed{}
	w := leasewatch.Start(t, ds.mgr, throughLeaseSet(t, backend))
	w.WaitFor(t, "first batch", 2*time.Minute, func(b [][]lease.Event) bool { return len(b) > 0 })
	first := w.Batches()[0]
	if got, ok := find(first, a.Key()); !ok || got.Type != lease.Added || !sameAttrs(got.Lease.Attrs, a.Attrs) {
		t.Fatalf("first batch %s: want %s Added with its attributes", leasewatch.Describe(first), a.Key())
	}
	for _, ev := range first {
		if ev.Type != lease.Added {
			t.Errorf("first batch holds %s %s; it lists the current leases as Added", ev.Type, ev.Lease.Key())
		}
	}

	b := peer("10.244.6.0/24", "198.51.100.16", "ae:00:00:00:00:06")
	ds.put(t, b)
	await(t, w, "new lease "+b.Key(), lease.Added, b)
	changed := a
	changed.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"ae:00:00:00:00:50"}`)
	ds.put(t, changed)
	await(t, w, "changed lease "+a.Key(), lease.Added, changed)
	ds.del(t, changed)
	gone := await(t, w, "removed lease "+a.Key(), lease.Removed, lease.Lease{Subnet: a.Subnet})
	if !sameAttrs(gone.Attrs, lease.Attrs{}) && !sameAttrs(gone.Attrs, changed.Attrs) {
		t.Errorf("Removed event carries %+v: the attributes last stored (%+v), or none", gone.Attrs, changed.Attrs)
	}
	checkKeys(t, w.Batches())

	// What a backend is handed: the removal with the attributes it was given.
	got, ok := backend.find(lease.Removed, a.Key())
	if !ok || !sameAttrs(got.Attrs, changed.Attrs) || got.Subnet != a.Subnet {
		t.Errorf("the backend got removal %v (%+v); want %s with %s", ok, got, a.Key(), changed.Attrs.BackendData)
	}
}

func peer(subnet, publicIP, mac string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{
		PublicIP: netip.MustParseAddr(publicIP), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`),
	}}
}

func sameAttrs(a, b lease.Attrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 && a.BackendType == b.BackendType &&
		string(a.BackendData) == string(b.BackendData) && string(a.BackendV6Data) == string(b.BackendV6Data)
}

func find(evs []lease.Event, key string) (lease.Event, bool) {
	for _, ev := range evs {
		if ev.Lease.Key() == key {
			return ev, true
		}
	}
	return lease.Event{}, false
}

// throughLeaseSet passes each batch, as the daemon does, through a lease
// set (this node 10.244.1.0/24) to receiver.
func throughLeaseSet(t *testing.T, receiver leaseset.Receiver) func(context.Context, []lease.Event) {
	cfg, err := config.Parse([]byte(netConf))
	if err != nil {
		t.Fatal(err)
	}
	own := peer("10.244.1.0/24", "198.51.100.11", "ae:00:00:00:00:01")
	set := leaseset.New(cfg, &own, noHost{})
	return func(ctx context.Context, b []lease.Event) { set.Apply(ctx, b, false, receiver) }
}

// noHost is a node without addresses or routes in the pod network.
type noHost struct{}

func (noHost) Prefixes() ([]leaseset.HostPrefix, error) { return nil, nil }

// handed is the backend's stand-in: it keeps what the lease set hands it.
type handed struct {
	mu     sync.Mutex
	events []lease.Event
}

func (h *handed) HandleEvents(_ context.Context, evs []lease.Event) {
	h.mu.Lock()
	h.events = append(h.events, evs...)
	h.mu.Unlock()
}

func (h *handed) find(typ lease.EventType, key string) (lease.Lease, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range h.events {
		if ev.Type == typ && ev.Lease.Key() == key {
			return ev.Lease, true
		}
	}
	return lease.Lease{}, false
}

// await waits for an event of type typ for want's key whose attributes,
// for an Added event, are want's; it returns the event's lease.
func await(t *testing.T, w *leasewatch.Recorder, what string, typ lease.EventType, want lease.Lease) lease.Lease {
	t.Helper()
	var got lease.Lease
	w.WaitFor(t, what, 30*time.Second, func(batches [][]lease.Event) bool {
		for _, b := range batches {
			for _, ev := range b {
				if ev.Type == typ && ev.Lease.Key() == want.Key() && (typ == lease.Removed || sameAttrs(ev.Lease.Attrs, want.Attrs)) {
					got = ev.Lease
					return true
				}
			}
		}
		return false
	})
	return got
}

// checkKeys checks that every lease the manager sent has network
// addresses for subnets: its key parses back to them.
func checkKeys(t *testing.T, batches [][]lease.Event) {
	t.Helper()
	for _, b := range batches {
		for _, ev := range b {
			v4, v6, err := lease.ParseKey(ev.Lease.Key())
			if err != nil || v4 != ev.Lease.Subnet || v6 != ev.Lease.IPv6Subnet {
				t.Errorf("%s %s: the key does not parse back to the subnets (%v)", ev.Type, ev.Lease.Key(), err)
			}
		}
	}
}

// etcdStore is the etcd manager on a real etcd, and leases written as
// upstream flanneld writes them.
func etcdStore(t *testing.T) datastore {
	tbtest.NeedTools(t, "/usr/bin/etcd")
	ports, err := testbed.FreePorts("", netip.MustParseAddr("127.0.0.1"), 2)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := testbed.StartEtcdServer(ctx, testbed.EtcdOptions{
		DataDir: filepath.Join(t.TempDir(), "etcd"), LogFile: filepath.Join(t.TempDir(), "etcd.log"),
		ClientURLs: []string{endpoint}, PeerURL: "http://127.0.0.1:" + strconv.Itoa(ports[1]),
		NoFsync: true, DieWithParent: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Kill(); err != nil {
			t.Errorf("stop etcd: %v", err)
		}
	})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	const prefix = "/coreos.com/network"
	etcdPut(t, cli, prefix+"/config", netConf)
	mgr, err := etcd.New(etcd.Options{Endpoints: []string{endpoint}, Prefix: prefix, LeaseTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	key := func(l lease.Lease) string { return prefix + "/subnets/" + l.Key() }
	return datastore{
		mgr: mgr,
		put: func(t *testing.T, l lease.Lease) {
			v, err := json.Marshal(l.Attrs)
			if err != nil {
				t.Fatal(err)
			}
			etcdPut(t, cli, key(l), string(v))
		},
		del: func(t *testing.T, l lease.Lease) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := cli.Delete(ctx, key(l)); err != nil {
				t.Fatalf("delete %s: %v", key(l), err)
			}
		},
	}
}

func etcdPut(t *testing.T, cli *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// kubeStore is the Kubernetes manager on a real kube-apiserver, and leases
// written as Nodes with flanneld's annotations.
func kubeStore(t *testing.T) datastore {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv, err := kubetest.Start(ctx, kubetest.Options{})
	if errors.Is(err, kubetest.ErrUnavailable) {
		tbtest.Unavailable(t, "%v", err)
	}
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("stop kube-apiserver: %v", err)
		}
	})
	cs, err := srv.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(path, []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	mgr, err := kube.New(kube.Options{RestConfig: srv.AdminConfig(), NetConfPath: path, NodeName: "contract-own"})
	if err != nil {
		t.Fatal(err)
	}
	return datastore{
		mgr: mgr,
		put: func(t *testing.T, l lease.Lease) { putNode(t, cs, l) },
		del: func(t *testing.T, l lease.Lease) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cs.CoreV1().Nodes().Delete(ctx, nodeName(l), metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete node %s: %v", nodeName(l), err)
			}
		},
	}
}

func nodeName(l lease.Lease) string {
	return "contract-" + strings.NewReplacer(".", "-", "/", "-").Replace(l.Subnet.String())
}

// putNode creates the node holding l, or updates its annotations.
func putNode(t *testing.T, cs kubernetes.Interface, l lease.Lease) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const p = kube.DefaultAnnotationPrefix + "/"
	ann := map[string]string{
		p + "kube-subnet-manager": "true", p + "backend-type": l.Attrs.BackendType,
		p + "backend-data": string(l.Attrs.BackendData), p + "public-ip": l.Attrs.PublicIP.String(),
	}
	nodes := cs.CoreV1().Nodes()
	n, err := nodes.Get(ctx, nodeName(l), metav1.GetOptions{})
	if err != nil {
		n = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName(l), Annotations: ann}}
		n.Spec.PodCIDR, n.Spec.PodCIDRs = l.Subnet.String(), []string{l.Subnet.String()}
		_, err = nodes.Create(ctx, n, metav1.CreateOptions{})
	} else {
		n.Annotations = ann
		_, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("write node %s: %v", nodeName(l), err)
	}
}
