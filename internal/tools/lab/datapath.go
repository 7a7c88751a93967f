package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"text/tabwriter"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/antispoof"
	"github.com/flannelgo/flannel/internal/config"
	"github.com/flannelgo/flannel/internal/datapath/ebpf"
	"github.com/flannelgo/flannel/internal/harness/testbed"
)

// wantsEBPF: the lab's network config asks for the eBPF fast path.
func (s *Spec) wantsEBPF() bool { return s.Datapath == config.DatapathEBPF }

// checkDatapath validates --datapath against the backend.
func (s *Spec) checkDatapath() error {
	switch s.Datapath {
	case "", config.DatapathKernel:
		s.Datapath = ""
		return nil
	case config.DatapathEBPF:
		if s.Backend != "host-gw" && s.Backend != "vxlan" {
			return fmt.Errorf("--datapath ebpf works with --backend host-gw or vxlan, not %s", s.Backend)
		}
		return nil
	}
	return fmt.Errorf("--datapath %q: use kernel (the default) or ebpf", s.Datapath)
}

// dataPaths prints, for every pod the flannel CNI plugin recorded on each
// node, which path its traffic takes (the eBPF fast path's program on its
// host-side veth, or the kernel's bridge and netfilter), and fails a pod
// whose path is not the one the network config asks for. subnetFile
// locates a node's subnet.env, beside which the records live.
func (c *checker) dataPaths(subnetFile func(*testbed.Node) string) {
	want := "kernel"
	if c.spec.wantsEBPF() {
		want = "ebpf"
	}
	fmt.Fprintf(c.out, "\ndata path per pod (net-conf.json asks for %s):\n", want)
	names := map[netip.Addr]string{}
	for _, p := range c.pods {
		names[p.IP] = p.Name
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	defer w.Flush()
	for _, n := range c.tb.Nodes {
		pods, err := antispoof.ReadPods(antispoof.RecordDir(subnetFile(n)), "")
		if err != nil {
			c.fail("data path on "+n.Name, "read the CNI plugin's pod records: "+err.Error())
			continue
		}
		for _, p := range pods {
			path, err := hostIfPath(n.NS, p.HostIf)
			if errors.As(err, new(netlink.LinkNotFoundError)) {
				continue // the record of a pod being deleted
			}
			label := p.String()
			if len(p.IPs) > 0 && names[p.IPs[0]] != "" {
				label = names[p.IPs[0]] + " (" + p.HostIf + ")"
				delete(names, p.IPs[0])
			}
			switch {
			case err != nil:
				c.fail("data path of "+label+" on "+n.Name, err.Error())
				path = "?"
			case (path != "kernel") != c.spec.wantsEBPF():
				c.fail("data path of "+label+" on "+n.Name, fmt.Sprintf("takes the %s path, the config asks for %s; see flanneld's log for \"eBPF fast path\"", path, want))
			default:
				c.pass()
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\n", n.Name, label, path)
		}
	}
	// A pod the check created but no record names would pass unseen.
	for ip, name := range names {
		c.fail("data path of "+name, fmt.Sprintf("no record of the flannel CNI plugin has its address %s, so its path is unknown", ip))
	}
}

// hostIfPath reads the path of interface name in namespace ns.
func hostIfPath(ns, name string) (string, error) {
	var path string
	err := testbed.InNamespace(ns, func() (err error) {
		path, err = ebpf.PathOf(name)
		return err
	})
	return path, err
}
