package main

import (
	"context"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

const subnetsPrefix = testbed.DefaultEtcdPrefix + "/subnets/"

// runEtcd measures etcd mode for each size. Before each run the leases
// are rewritten and flannel.1 is deleted, so every run starts cold.
func runEtcd(ctx context.Context, tb *testbed.Testbed, o *options) ([]row, error) {
	if err := tb.StartEtcd(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = tb.StopEtcd() }()
	if err := tb.PutConfig(ctx, "", netConf); err != nil {
		return nil, err
	}
	cli, err := tb.EtcdClient(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	n := tb.Nodes[0]
	var rows []row
	for _, size := range o.sizes {
		if err := resetEtcd(ctx, cli, n, size); err != nil {
			return rows, err
		}
		r := row{mode: "etcd", n: size}
		if r.convergence, err = converge(ctx, tb, n, o.env, o.args, size, o.kernelReady); err != nil {
			return rows, err
		}
		err := measure(ctx, tb, n, &r, o, func(i int) error { return putLease(ctx, cli, i) })
		if serr := tb.StopFlanneld(n); err == nil {
			err = serr
		}
		if err != nil {
			return rows, err
		}
		r.print()
		rows = append(rows, r)
	}
	return rows, nil
}

// resetEtcd leaves exactly size peer leases (indices 1..size) in etcd and
// no trace of an earlier run on the node.
func resetEtcd(ctx context.Context, cli *clientv3.Client, n *testbed.Node, size int) error {
	if err := deleteDevice(n.NS); err != nil {
		return err
	}
	if err := os.Remove(n.SubnetFile); err != nil && !os.IsNotExist(err) {
		return err
	}
	if _, err := cli.Delete(ctx, subnetsPrefix, clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("clear leases: %w", err)
	}
	const perTxn = 128 // etcd's default --max-txn-ops
	for lo := 1; lo <= size; lo += perTxn {
		var ops []clientv3.Op
		for i := lo; i < lo+perTxn && i <= size; i++ {
			ops = append(ops, clientv3.OpPut(leaseKey(i), leaseValue(i)))
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Txn(rctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("write leases %d..%d: %w", lo, lo+len(ops)-1, err)
		}
	}
	return nil
}

func putLease(ctx context.Context, cli *clientv3.Client, i int) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Put(rctx, leaseKey(i), leaseValue(i)); err != nil {
		return fmt.Errorf("put lease %d: %w", i, err)
	}
	return nil
}

func leaseKey(i int) string {
	s := subnetAt(i)
	return fmt.Sprintf("%s%s-%d", subnetsPrefix, s.Addr(), s.Bits())
}

// leaseValue is what an upstream VXLAN node writes.
func leaseValue(i int) string {
	return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":%s}`, publicIPAt(i), backendData(i))
}
