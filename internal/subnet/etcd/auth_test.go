package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// upstreamRole turns on etcd auth with a user whose role grants exactly
// what upstream flanneld needs: <prefix>/config read, <prefix>/subnets/
// read-write. It returns a root client for inspection.
func upstreamRole(t *testing.T, s *etcdServer, user, password string) *clientv3.Client {
	t.Helper()
	ctx := testCtx(t)
	cli := s.raw()
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user root", func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err }},
		{"grant root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role", func() error { _, err := cli.RoleAdd(ctx, "flannel"); return err }},
		{"grant config", func() error {
			_, err := cli.RoleGrantPermission(ctx, "flannel", configKey, "", clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"grant subnets", func() error {
			_, err := cli.RoleGrantPermission(ctx, "flannel", subnetsPath, clientv3.GetPrefixRangeEnd(subnetsPath), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user", func() error { _, err := cli.UserAdd(ctx, user, password); return err }},
		{"grant user", func() error { _, err := cli.UserGrantRole(ctx, user, "flannel"); return err }},
		{"enable auth", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("etcd auth set-up, %s: %v", st.what, err)
		}
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{s.endpoint()}, DialTimeout: 5 * time.Second,
		Username: "root", Password: "rootpw", Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// Under an etcd role that grants only upstream's keys, flanneld acquires,
// reuses and renews its lease: the liveness marker is refused and dropped,
// and nothing is written outside <prefix>/config and <prefix>/subnets/.
func TestUpstreamRoleOnly(t *testing.T) {
	s := startEtcd(t)
	s.put(configKey, netConf)
	root := upstreamRole(t, s, "node", "nodepw")
	opts := Options{Username: "node", Password: "nodepw"}

	ctx, stop := context.WithCancel(testCtx(t))
	m1 := s.manager(t, opts)
	first, err := m1.AcquireLease(ctx, vxlanAttrs("198.51.100.2", "ae:00:00:00:00:01"))
	if err != nil {
		t.Fatalf("acquire under upstream's role: %v", err)
	}
	if err := m1.RenewLease(ctx, first); err != nil {
		t.Fatalf("renew under upstream's role: %v", err)
	}
	other := acquire(t, s.manager(t, opts), vxlanAttrs("198.51.100.3", "ae:00:00:00:00:03"))
	if other.Subnet == first.Subnet {
		t.Fatalf("two nodes got subnet %s", first.Subnet)
	}
	stop()
	m1.Close()
	again := acquire(t, s.manager(t, opts), vxlanAttrs("198.51.100.2", "ae:00:00:00:00:02"))
	if again.Subnet != first.Subnet {
		t.Fatalf("restarted node got %s, want its old subnet %s", again.Subnet, first.Subnet)
	}

	resp := getRaw(t, root, DefaultPrefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	for _, kv := range resp.Kvs {
		if k := string(kv.Key); k != configKey && !strings.HasPrefix(k, subnetsPath) {
			t.Errorf("key %s written outside upstream's layout", k)
		}
	}
	if len(resp.Kvs) != 3 {
		t.Errorf("etcd holds %d keys under %s, want the config and two leases", len(resp.Kvs), DefaultPrefix)
	}
}
