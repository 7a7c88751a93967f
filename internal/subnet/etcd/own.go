package etcd

import (
	"context"
	"fmt"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/lease"
)

// ReassertLease writes l back over a value another writer put at its key,
// provided the key still holds that writer's value (modified at revision
// seen): a later change is not clobbered blindly, it arrives as an event of
// its own. It reports whether it wrote.
func (m *Manager) ReassertLease(ctx context.Context, l *lease.Lease, seen int64) (bool, error) {
	cli, err := m.client()
	if err != nil {
		return false, fmt.Errorf("re-assert lease %s: %w", l, err)
	}
	value, err := lease.Attrs.MarshalJSON(l.Attrs)
	if err != nil {
		return false, fmt.Errorf("re-assert lease %s: encode attributes: %w", l, err)
	}
	key := m.subnetsPrefix() + l.Key()
	// Only an overwrite of the key we wrote is answered: a key created
	// after our last write is another node's lease for a subnet that was
	// free after ours was deleted, and RenewLease reports it as taken.
	got, err := m.put(ctx, cli, key, value, 0, clientv3.Compare(clientv3.ModRevision(key), "=", seen),
		clientv3.Compare(clientv3.CreateRevision(key), "<", l.Revision+1))
	if err != nil || got == nil {
		return false, err
	}
	l.Expiration, l.Revision = got.Expiration, got.Revision
	return true, nil
}

// noteOwn remembers a key this manager holds for the node, so that after a
// datastore reset its loss is reported at once (the daemon re-creates it)
// while other nodes' leases are given time to come back.
func (m *Manager) noteOwn(key string) {
	m.ownMu.Lock()
	defer m.ownMu.Unlock()
	if m.ownKeys == nil {
		m.ownKeys = map[string]bool{}
	}
	m.ownKeys[key] = true
}

func (m *Manager) isOwn(key string) bool {
	m.ownMu.Lock()
	defer m.ownMu.Unlock()
	return m.ownKeys[key]
}

// previousIfFree returns the subnets subnet.env named from the last run
// when they still fit the network and no lease holds or overlaps them:
// a node that was down long enough for its lease to expire (or whose
// datastore was wiped) comes back with the addresses its pods still have.
func (m *Manager) previousIfFree(cfg *config.Config, recs []record) (v4, v6 netip.Prefix, ok bool) {
	want := lease.Lease{}
	if cfg.EnableIPv4 {
		want.Subnet = m.opts.PreviousSubnet.Masked()
	}
	if cfg.EnableIPv6 {
		want.IPv6Subnet = m.opts.PreviousIPv6Subnet.Masked()
	}
	if !fits(cfg, want) {
		return v4, v6, false
	}
	for _, r := range recs {
		if overlaps(r.l, want) {
			klog.Infof("subnet.env from the last run names %s, but lease %s holds it now; allocating another subnet", want.Key(), r.name)
			return v4, v6, false
		}
	}
	return want.Subnet, want.IPv6Subnet, true
}

// dropStale deletes leases with this node's address that no longer fit the
// network config (the operator changed Network), as upstream does: left in
// place they would be programmed as a peer, by this very node too. A lease
// whose holder is alive is another running node's and is left alone unless
// subnet.env names it. It reports whether it deleted anything.
func (m *Manager) dropStale(ctx context.Context, cli *clientv3.Client, cfg *config.Config, attrs lease.Attrs, recs []record) (bool, error) {
	dropped := false
	for _, r := range recs {
		if !sameNode(r.l.Attrs, attrs, cfg.EnableIPv6) || fits(cfg, r.l) {
			continue
		}
		if !m.previouslyOurs(r.l) {
			alive, err := m.isAlive(ctx, cli, r.name)
			if err != nil || alive {
				return dropped, err
			}
		}
		key := m.subnetsPrefix() + r.name
		ops := []clientv3.Op{clientv3.OpDelete(key)}
		if !m.markersOff() {
			ops = append(ops, clientv3.OpDelete(m.aliveKey(r.name)))
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		resp, err := cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", r.kv.ModRevision)).
			Then(ops...).Commit()
		cancel()
		if len(ops) > 1 && m.refusedMarker(err) {
			return true, nil // nothing deleted: re-list and delete without the marker
		}
		if err != nil {
			return dropped, m.etcdErr("delete stale lease "+key, err)
		}
		if resp.Succeeded {
			dropped = true
			klog.Infof("removed this node's lease %s from an earlier run: it does not fit the network config (Network %s, IPv6Network %s)",
				r.name, cfg.Network, cfg.IPv6Network)
		}
	}
	return dropped, nil
}
