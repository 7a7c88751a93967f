package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/flannelgo/flannel/internal/harness/testbed"
	"github.com/flannelgo/flannel/internal/subnetenv"
	"github.com/flannelgo/flannel/internal/tools/kernelstate"
)

// ErrDegraded is returned by Status when the lab is not fully running.
var ErrDegraded = errors.New("lab is degraded")

// Describe prints the nodes (underlay IP, subnet, MTU) and pods (name,
// node, IP) of the lab in dir.
func Describe(ctx context.Context, out io.Writer, dir string) error {
	spec, err := ReadSpec(dir)
	if err != nil {
		return err
	}
	tb, err := loadTestbed(spec.Name, dir)
	if err != nil {
		return err
	}
	if spec.Kube != nil {
		_, err = describeKube(ctx, out, spec, tb)
		return err
	}
	_, err = describe(out, tb)
	return err
}

// describe prints the tables and reports whether every flanneld runs.
func describe(out io.Writer, tb *recorded) (bool, error) {
	healthy := true
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tNAMESPACE\tSEGMENT\tUNDERLAY IP\tSUBNET\tMTU\tFLANNELD")
	for _, n := range tb.Nodes {
		subnet, mtu := "-", "-"
		if env, err := subnetenv.Read(n.SubnetFile); err == nil {
			subnet, mtu = env.Subnet.Masked().String(), strconv.Itoa(env.MTU)
		}
		var fl string
		if p := tb.flanneld(n); p != nil {
			fl = fmt.Sprintf("pid %d", p.Pid)
		} else {
			fl = "NOT RUNNING (see " + n.LogFile + ")"
			healthy = false
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", n.Name, n.NS, n.Segment, n.Addr, subnet, mtu, fl)
	}
	if err := w.Flush(); err != nil {
		return false, err
	}
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "POD\tNODE\tNAMESPACE\tIP\tMTU")
	for _, n := range tb.Nodes {
		for _, p := range n.Pods {
			mtu := "-"
			if m, err := linkMTU(p.NS, "eth0"); err == nil {
				mtu = strconv.Itoa(m)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Name, n.Name, p.NS, p.IP, mtu)
		}
	}
	return healthy, w.Flush()
}

func linkMTU(ns, name string) (int, error) {
	mtu := 0
	err := kernelstate.With(ns, func(k *kernelstate.Reader) error {
		d, err := k.Device(name)
		if err == nil {
			mtu = d.MTU
		}
		return err
	})
	return mtu, err
}

// Status prints the lab's processes, etcd's health and the tables. It
// returns ErrDegraded when the lab process, etcd or a flanneld is down.
func Status(ctx context.Context, out io.Writer, dir string) error {
	spec, err := ReadSpec(dir)
	if err != nil {
		return err
	}
	healthy := true
	lp, err := readLabProc(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "lab %s  (state %s)\n", spec.Name, dir)
	fmt.Fprintf(out, "backend %s, %d node(s), %d segment(s), underlay MTU %d, pod MTU %s\n",
		spec.Backend, spec.Nodes, spec.Segments, spec.UnderlayMTU, podMTUString(spec.PodMTU))
	switch {
	case lp.alive():
		fmt.Fprintf(out, "lab process: pid %d, running (log %s)\n", lp.Pid, LogPath(dir))
	case lp == nil:
		fmt.Fprintf(out, "lab process: none recorded: the lab failed to start or was stopped; `flannelctl lab down --name %s` removes what is left\n", spec.Name)
		healthy = false
	default:
		fmt.Fprintf(out, "lab process: pid %d is GONE (crashed or killed; see %s); `flannelctl lab down --name %s` removes what is left\n", lp.Pid, LogPath(dir), spec.Name)
		healthy = false
	}
	tb, err := loadTestbed(spec.Name, dir)
	if err != nil {
		return fmt.Errorf("%w; `flannelctl lab down --name %s` removes what is left", err, spec.Name)
	}
	if spec.Kube != nil {
		fmt.Fprintln(out)
		ok, err := describeKube(ctx, out, spec, tb)
		if err != nil {
			return err
		}
		if !healthy || !ok {
			return ErrDegraded
		}
		return nil
	}
	if err := etcdHealth(ctx, tb.Testbed); err != nil {
		fmt.Fprintf(out, "etcd: %s NOT ANSWERING: %v\n", tb.EtcdEndpoint(), err)
		healthy = false
	} else {
		fmt.Fprintf(out, "etcd: %s healthy (embedded in the lab process)\n", tb.EtcdEndpoint())
	}
	fmt.Fprintln(out)
	ok, err := describe(out, tb)
	if err != nil {
		return err
	}
	if !healthy || !ok {
		return ErrDegraded
	}
	return nil
}

func podMTUString(m int) string {
	if m == 0 {
		return "auto (FLANNEL_MTU)"
	}
	return strconv.Itoa(m)
}

func etcdHealth(ctx context.Context, tb *testbed.Testbed) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cli, err := tb.EtcdClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Get(ctx, testbed.DefaultEtcdPrefix+"/config")
	return err
}
