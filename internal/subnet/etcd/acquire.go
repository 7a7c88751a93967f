package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
	"github.com/flannelgo/flannel/internal/pace"
	"github.com/flannelgo/flannel/internal/subnet"
)

// maxAttempts bounds how often AcquireLease re-lists after losing a race. In
// a dual-stack network any concurrent change fails the transaction, so a
// crowd of N nodes starting together needs up to N rounds.
const maxAttempts = 50

// renewAttempts bounds re-creating an expired lease in RenewLease.
const renewAttempts = 5

// AcquireLease returns the node's existing lease (same public address) with
// attrs written into it, or claims a free subnet.
func (m *Manager) AcquireLease(ctx context.Context, attrs *lease.Attrs) (*lease.Lease, error) {
	who := describeNode(*attrs)
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire lease for %s: %w", who, err)
	}
	if err := checkAttrs(cfg, *attrs); err != nil {
		return nil, fmt.Errorf("acquire lease for %s: %w", who, err)
	}
	value, err := json.Marshal(*attrs)
	if err != nil {
		return nil, fmt.Errorf("acquire lease for %s: encode attributes: %w", who, err)
	}
	cli, err := m.client()
	if err != nil {
		return nil, fmt.Errorf("acquire lease for %s: %w", who, err)
	}
	bo := raceBackoff()
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := bo.Sleep(ctx); err != nil {
				return nil, fmt.Errorf("acquire lease for %s: %w", who, err)
			}
		}
		l, err := m.tryAcquire(ctx, cli, cfg, *attrs, value)
		if err != nil {
			return nil, fmt.Errorf("acquire lease for %s: %w", who, err)
		}
		if l != nil {
			return l, nil
		}
		klog.V(2).Infof("acquire lease for %s: lost a race with another node (attempt %d), re-listing", who, attempt+1)
	}
	return nil, fmt.Errorf("acquire lease for %s: other nodes changed the leases under %s during each of %d attempts; retry later",
		who, m.subnetsPrefix(), maxAttempts)
}

// tryAcquire makes one attempt; a nil lease and nil error mean another node
// changed the leases between our listing and our transaction.
func (m *Manager) tryAcquire(ctx context.Context, cli *clientv3.Client, cfg *config.Config, attrs lease.Attrs, value []byte) (*lease.Lease, error) {
	rev, recs, err := m.list(ctx, cli)
	if err != nil {
		return nil, err
	}
	if dropped, err := m.dropStale(ctx, cli, cfg, attrs, recs); dropped || err != nil {
		return nil, err // re-list without the stale lease
	}
	own, err := m.ownLease(ctx, cli, cfg, attrs, recs)
	if err != nil {
		return nil, err
	}
	// The liveness marker is written in the same transaction as the lease,
	// so a node with our address never sees the lease without it.
	marker, err := m.grantMarker(ctx, cli)
	if err != nil {
		return nil, err
	}
	l, err := m.claim(ctx, cli, cfg, attrs, value, rev, recs, own, marker)
	if l == nil || err != nil {
		if marker != 0 {
			m.revoke(ctx, cli, marker)
		}
		if marker != 0 && m.refusedMarker(err) {
			return nil, nil // re-list and claim without the marker
		}
		return nil, err
	}
	if marker != 0 {
		m.startAlive(ctx, l.Key(), marker)
	}
	m.noteOwn(l.Key())
	return l, nil
}

// claim reuses own or creates a free lease, with the marker attached.
func (m *Manager) claim(ctx context.Context, cli *clientv3.Client, cfg *config.Config, attrs lease.Attrs, value []byte,
	rev int64, recs []record, own *record, marker clientv3.LeaseID) (*lease.Lease, error) {
	if own != nil {
		key := m.subnetsPrefix() + own.name
		l, err := m.put(ctx, cli, key, value, marker, clientv3.Compare(clientv3.ModRevision(key), "=", own.kv.ModRevision))
		if l == nil || err != nil {
			return nil, err
		}
		l.Subnet, l.IPv6Subnet, l.Attrs = own.l.Subnet, own.l.IPv6Subnet, attrs
		if own.kv.Lease != 0 {
			// The key now hangs on the new etcd lease; the old one holds nothing.
			m.revoke(ctx, cli, clientv3.LeaseID(own.kv.Lease))
		}
		klog.Infof("reusing lease %s from an earlier run", l)
		return l, nil
	}
	v4, v6, prev := m.previousIfFree(cfg, recs)
	if !prev {
		var err error
		v4, v6, err = pickFree(cfg, takenBy(recs), rand.IntN)
		if err != nil {
			return nil, fmt.Errorf("%w (see them with: etcdctl get --prefix --keys-only %s)", err, m.subnetsPrefix())
		}
	}
	l, err := m.create(ctx, cli, v4, v6, value, rev, marker)
	if l == nil || err != nil {
		return nil, err
	}
	l.Attrs = attrs
	if prev {
		klog.Infof("took back lease %s: subnet.env from the last run names it and it was free", l)
	} else {
		klog.Infof("allocated lease %s", l)
	}
	for _, twin := range sameAddress(cfg, attrs, recs) {
		klog.Errorf("duplicate public address: lease %s (this node) and lease %s (another running node) both advertise %s: "+
			"traffic for one of them will reach the other; give each node its own address with --iface, --iface-regex, --iface-can-reach or --public-ip",
			l.Key(), twin.name, describeNode(attrs))
	}
	return l, nil
}

// create claims v4/v6 unless some key took either of them since rev.
func (m *Manager) create(ctx context.Context, cli *clientv3.Client, v4, v6 netip.Prefix, value []byte, rev int64, marker clientv3.LeaseID) (*lease.Lease, error) {
	name := lease.MakeKey(v4, v6)
	key := m.subnetsPrefix() + name
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	if !v6.IsValid() {
		// An IPv4-only subnet can only collide with its own key or with a
		// dual-stack key that starts with it: check exactly those, so
		// unrelated nodes never make us retry.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key+"&"), "=", 0).WithPrefix())
	} else {
		// An IPv6 part may sit behind any IPv4 part in a key, which no key
		// range can express: fail if any lease changed since the listing.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(m.subnetsPrefix()), "<", rev+1).WithPrefix())
	}
	l, err := m.put(ctx, cli, key, value, marker, cmps...)
	if l == nil || err != nil {
		return nil, err
	}
	l.Subnet, l.IPv6Subnet = v4, v6
	return l, nil
}

// put writes value at key under a fresh etcd lease if cmps hold, and with a
// non-zero marker the key's liveness marker too. It returns a nil lease
// (and revokes the unused etcd lease) when they do not hold.
func (m *Manager) put(ctx context.Context, cli *clientv3.Client, key string, value []byte, marker clientv3.LeaseID, cmps ...clientv3.Cmp) (*lease.Lease, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	granted, err := cli.Grant(rctx, m.ttlSeconds())
	if err != nil {
		return nil, m.etcdErr("grant an etcd lease", err)
	}
	ops := []clientv3.Op{clientv3.OpPut(key, string(value), clientv3.WithLease(granted.ID))}
	if marker != 0 {
		ops = append(ops, clientv3.OpPut(m.aliveKey(strings.TrimPrefix(key, m.subnetsPrefix())), "", clientv3.WithLease(marker)))
	}
	resp, err := cli.Txn(rctx).If(cmps...).Then(ops...).Commit()
	if err != nil || !resp.Succeeded {
		m.revoke(ctx, cli, granted.ID)
	}
	if err != nil {
		return nil, m.etcdErr("write "+key, err)
	}
	if !resp.Succeeded {
		return nil, nil
	}
	return &lease.Lease{
		Expiration: time.Now().Add(time.Duration(granted.TTL) * time.Second),
		Revision:   resp.Header.Revision,
	}, nil
}

// revoke is clean-up: a lease we fail to revoke just expires.
func (m *Manager) revoke(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	if _, err := cli.Revoke(rctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		klog.V(2).Infof("revoke etcd lease %x: %v", id, err)
	}
}

// RenewLease extends l's etcd lease. If the etcd lease is gone (it expired
// while etcd or this node was down) the key is written again, unless another
// node has taken the subnet in the meantime.
func (m *Manager) RenewLease(ctx context.Context, l *lease.Lease) error {
	cli, err := m.client()
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l, err)
	}
	key := m.subnetsPrefix() + l.Key()
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := cli.Get(rctx, key)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l, m.etcdErr("read "+key, err))
	}
	if len(resp.Kvs) == 0 {
		return m.recreate(ctx, cli, l)
	}
	kv := resp.Kvs[0]
	cur, err := lease.DecodeValue(kv.Value)
	if err != nil {
		// No node can hold a subnet with a value nobody can read: another
		// writer put junk over ours. Write ours back over exactly that.
		klog.Errorf("lease %s holds a value no node can read (%v); writing ours back", l.Key(), err)
		return m.rewrite(ctx, cli, l, key, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
	}
	if !sameNode(cur, l.Attrs, l.IPv6Subnet.IsValid()) {
		return m.foreignValue(l, kv)
	}
	if kv.Lease != 0 {
		ka, err := cli.KeepAliveOnce(rctx, clientv3.LeaseID(kv.Lease))
		if err == nil {
			l.Expiration = time.Now().Add(time.Duration(ka.TTL) * time.Second)
			l.Revision = kv.ModRevision
			return nil
		}
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("renew lease %s: %w", l, m.etcdErr("keep etcd lease alive", err))
		}
	}
	// The key is ours but its etcd lease is gone: hang it on a new one.
	return m.rewrite(ctx, cli, l, key, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
}

// recreate writes l's key again after it expired, provided no other lease
// has taken either of its subnets meanwhile.
func (m *Manager) recreate(ctx context.Context, cli *clientv3.Client, l *lease.Lease) error {
	bo := raceBackoff()
	for attempt := range renewAttempts {
		if attempt > 0 {
			if err := bo.Sleep(ctx); err != nil {
				return fmt.Errorf("renew lease %s: %w", l, err)
			}
		}
		rev, recs, err := m.list(ctx, cli)
		if err != nil {
			return fmt.Errorf("renew lease %s: %w", l, err)
		}
		for _, r := range recs {
			if r.name == l.Key() && sameNode(r.l.Attrs, l.Attrs, l.IPv6Subnet.IsValid()) {
				// Our key is back: a concurrent renewal beat us to it.
				l.Expiration, l.Revision = time.Now().Add(m.opts.LeaseTTL), r.kv.ModRevision
				return nil
			}
			if overlaps(r.l, *l) {
				return fmt.Errorf("renew lease %s: %w", l, takenErr(string(r.kv.Key), r.kv.Value))
			}
		}
		value, err := json.Marshal(l.Attrs)
		if err != nil {
			return fmt.Errorf("renew lease %s: encode attributes: %w", l, err)
		}
		got, err := m.create(ctx, cli, l.Subnet, l.IPv6Subnet, value, rev, 0)
		if err != nil {
			return fmt.Errorf("renew lease %s: %w", l, err)
		}
		if got != nil {
			l.Expiration, l.Revision = got.Expiration, got.Revision
			klog.Infof("lease %s had expired in etcd; re-created it", l)
			return nil
		}
	}
	return fmt.Errorf("renew lease %s: the lease expired and other nodes kept changing leases while we re-created it; retry", l)
}

func (m *Manager) rewrite(ctx context.Context, cli *clientv3.Client, l *lease.Lease, key string, cmp clientv3.Cmp) error {
	value, err := json.Marshal(l.Attrs)
	if err != nil {
		return fmt.Errorf("renew lease %s: encode attributes: %w", l, err)
	}
	got, err := m.put(ctx, cli, key, value, 0, cmp)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l, err)
	}
	if got == nil {
		// Most likely the etcd lease expired between our read and our
		// write, taking the key with it: take the re-create path, which
		// also checks nobody else holds the subnet now.
		return m.recreate(ctx, cli, l)
	}
	l.Expiration, l.Revision = got.Expiration, got.Revision
	klog.Infof("lease %s had lost its etcd lease; attached a new one", l)
	return nil
}

// foreignValue is the renewal error for our key holding another node's
// value. A key created after our last write means ours was deleted and
// another node took the subnet: final. An overwrite in place is another
// writer's doing, which the daemon answers by writing ours back
// (ReassertLease): retried.
func (m *Manager) foreignValue(l *lease.Lease, kv *mvccpb.KeyValue) error {
	if kv.CreateRevision > l.Revision {
		return fmt.Errorf("renew lease %s: %w", l, takenErr(string(kv.Key), kv.Value))
	}
	return fmt.Errorf("renew lease %s: %s overwrote it in place (revision %d); it is being written back", l, holderOf(kv.Value), kv.ModRevision)
}

func takenErr(key string, value []byte) error {
	return fmt.Errorf("%w: this node's lease was deleted and subnet %s is now held by %s; "+
		"exiting so that flanneld, restarted by its supervisor, acquires a fresh subnet", subnet.ErrLeaseTaken, key, holderOf(value))
}

// holderOf names the node a lease value describes, by its public address.
func holderOf(value []byte) string {
	var a lease.Attrs
	if json.Unmarshal(value, &a) != nil {
		return fmt.Sprintf("a value we cannot read (%s)", lease.Quote(value))
	}
	return describeNode(a)
}

// ownLease returns the lease this node held before, if it still fits the
// network (one that no longer fits is left to expire). A lease with this
// node's address whose holder is running is another node's, unless
// subnet.env names it.
func (m *Manager) ownLease(ctx context.Context, cli *clientv3.Client, cfg *config.Config, attrs lease.Attrs, recs []record) (*record, error) {
	candidates := sameAddress(cfg, attrs, recs)
	for _, r := range candidates {
		if m.previouslyOurs(r.l) {
			return r, nil
		}
	}
	for _, r := range candidates {
		alive, err := m.isAlive(ctx, cli, r.name)
		if err != nil {
			return nil, err
		}
		if !alive {
			return r, nil
		}
	}
	return nil, nil
}

// sameAddress lists the fitting leases that advertise this node's address.
func sameAddress(cfg *config.Config, attrs lease.Attrs, recs []record) []*record {
	var out []*record
	for i := range recs {
		r := &recs[i]
		if sameNode(r.l.Attrs, attrs, cfg.EnableIPv6) && fits(cfg, r.l) {
			out = append(out, r)
		}
	}
	return out
}

func (m *Manager) previouslyOurs(l lease.Lease) bool {
	prev4, prev6 := m.opts.PreviousSubnet.Masked(), m.opts.PreviousIPv6Subnet.Masked()
	return (prev4.IsValid() && prev4 == l.Subnet) || (prev6.IsValid() && prev6 == l.IPv6Subnet)
}

// sameNode compares public addresses, the identity upstream uses too.
func sameNode(a, b lease.Attrs, v6 bool) bool {
	return a.PublicIP == b.PublicIP && (!v6 || a.PublicIPv6 == b.PublicIPv6)
}

// fits reports whether l is a subnet cfg could have handed out.
func fits(cfg *config.Config, l lease.Lease) bool {
	if cfg.EnableIPv4 != l.Subnet.IsValid() || cfg.EnableIPv6 != l.IPv6Subnet.IsValid() {
		return false
	}
	if cfg.EnableIPv4 && !inRange(l.Subnet, cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax) {
		return false
	}
	return !cfg.EnableIPv6 || inRange(l.IPv6Subnet, cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax)
}

func inRange(p, network netip.Prefix, bits int, lo, hi netip.Addr) bool {
	a := p.Addr()
	return p.Bits() == bits && network.Contains(a) && a.Compare(lo) >= 0 && a.Compare(hi) <= 0
}

// overlaps reports whether a and b share an IPv4 or an IPv6 subnet.
func overlaps(a, b lease.Lease) bool {
	return (a.Subnet.IsValid() && a.Subnet.Overlaps(b.Subnet)) || (a.IPv6Subnet.IsValid() && a.IPv6Subnet.Overlaps(b.IPv6Subnet))
}

func checkAttrs(cfg *config.Config, a lease.Attrs) error {
	if cfg.EnableIPv4 && !a.PublicIP.IsValid() {
		return errors.New("the network has IPv4 but the node has no IPv4 public address (set --public-ip or --iface)")
	}
	if cfg.EnableIPv6 && !a.PublicIPv6.IsValid() {
		return errors.New("the network has IPv6 but the node has no IPv6 public address (set --public-ipv6 or --iface)")
	}
	return nil
}

func describeNode(a lease.Attrs) string {
	switch {
	case a.PublicIP.IsValid() && a.PublicIPv6.IsValid():
		return "node " + a.PublicIP.String() + "/" + a.PublicIPv6.String()
	case a.PublicIPv6.IsValid():
		return "node " + a.PublicIPv6.String()
	default:
		return "node " + a.PublicIP.String()
	}
}

// raceBackoff spreads retries of nodes that lost the same race: 20-40 ms
// after the first loss, doubling up to 160-320 ms.
func raceBackoff() *pace.Backoff {
	return pace.New(pace.Policy{Min: 30 * time.Millisecond, Max: 240 * time.Millisecond, Jitter: 1.0 / 3})
}
