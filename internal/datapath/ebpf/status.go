package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/nldump"
)

// Path names the data path an interface's ingress takes: "ebpf (tcx)" or
// "ebpf (clsact)" when a fast-path program is attached there, "kernel"
// otherwise. It reads the kernel, so any process (flannelctl doctor) can
// ask; run it in the node's network namespace.
func Path(ifindex int) (string, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return "", fmt.Errorf("query tcx programs of ifindex %d: %w", ifindex, err)
	}
	if res != nil {
		for _, p := range res.Programs {
			if ours, err := isFastPath(p.ID); err != nil {
				return "", err
			} else if ours {
				return "ebpf (tcx)", nil
			}
		}
	}
	if fs, err := ingressFilters(ifindex); err == nil && len(fs) > 0 {
		return "ebpf (clsact)", nil
	}
	return "kernel", nil
}

// PathOf is Path of the interface called name in the current network
// namespace. An interface that is gone gives an error that wraps
// netlink.LinkNotFoundError, which callers listing pods skip.
func PathOf(name string) (string, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return "", fmt.Errorf("find interface %s: %w", name, err)
	}
	return Path(l.Attrs().Index)
}

func isFastPath(id ebpf.ProgramID) (bool, error) {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false, fmt.Errorf("open program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return false, fmt.Errorf("read program %d: %w", id, err)
	}
	return info.Name == fastpathProgFromPod || info.Name == fastpathProgToPod, nil
}

// RemoveLeftovers detaches the fast path's clsact filters an earlier,
// killed flanneld left on any interface (tcx links die with their
// process, filters do not), for a node whose config no longer asks for
// the fast path. It returns how many it removed.
func RemoveLeftovers() (int, error) {
	links, err := nldump.List(netlink.LinkList)
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	n := 0
	var errs []error
	for _, l := range links {
		fs, err := ingressFilters(l.Attrs().Index)
		if err != nil {
			continue // no clsact qdisc, or the link went away
		}
		for _, f := range fs {
			if err := netlink.FilterDel(f); err != nil {
				errs = append(errs, fmt.Errorf("remove the fast path's filter from %s: %w", l.Attrs().Name, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}
