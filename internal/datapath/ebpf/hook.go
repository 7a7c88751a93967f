package ebpf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/nldump"
)

// attachment is one program at tc ingress of one interface.
type attachment interface {
	// intact reports whether the program is still attached there; someone
	// may have detached it (bpftool, tc) or the interface may be gone.
	intact() (bool, error)
	close() error
}

// hook attaches a program at tc ingress of an interface.
type hook interface {
	attach(ifindex int, prog *ebpf.Program) (attachment, error)
	String() string
}

// tcxHook attaches through tcx links (Linux 6.6 and later): a link is
// owned by flanneld's file descriptor, so the kernel detaches it when
// flanneld exits, and it never displaces another owner's program.
type tcxHook struct{}

func (tcxHook) String() string { return "tcx" }

func (tcxHook) attach(ifindex int, prog *ebpf.Program) (attachment, error) {
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, err
	}
	info, err := l.Info()
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("read the tcx link's id: %w", err)
	}
	return &tcxAttachment{Link: l, id: info.ID, ifindex: ifindex}, nil
}

type tcxAttachment struct {
	link.Link
	id      link.ID
	ifindex int
}

func (a *tcxAttachment) intact() (bool, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: a.ifindex, Attach: ebpf.AttachTCXIngress})
	if errors.Is(err, unix.ENODEV) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, p := range res.Programs {
		if id, ok := p.LinkID(); ok && id == a.id {
			return true, nil
		}
	}
	return false, nil
}

func (a *tcxAttachment) close() error { return a.Close() }

// filterName marks the clsact filters flanneld adds, so that a later run
// finds and removes what a killed one left (filters outlive the process).
const filterName = "flannel-fastpath"

// filterPrio is the clsact filter's priority: its own, so it neither
// replaces nor is replaced by another owner's filter.
const filterPrio = 0xf1a

// clsactHook attaches a direct-action bpf filter to a clsact qdisc, for
// kernels without tcx.
type clsactHook struct{}

func (clsactHook) String() string { return "clsact" }

func (clsactHook) attach(ifindex int, prog *ebpf.Program) (attachment, error) {
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT,
	}, QdiscType: "clsact"}
	if err := netlink.QdiscReplace(q); err != nil {
		return nil, fmt.Errorf("add a clsact qdisc: %w", err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1,
			Priority: filterPrio, Protocol: unix.ETH_P_ALL,
		},
		Fd: prog.FD(), Name: filterName, DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return nil, fmt.Errorf("add the ingress filter: %w", err)
	}
	return &clsactAttachment{ifindex: ifindex}, nil
}

type clsactAttachment struct{ ifindex int }

func (a *clsactAttachment) intact() (bool, error) {
	fs, err := ingressFilters(a.ifindex)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return false, nil
		}
		return false, err
	}
	return len(fs) > 0, nil
}

func (a *clsactAttachment) close() error {
	fs, err := ingressFilters(a.ifindex)
	if err != nil {
		return nil // the interface is gone, and its filters with it
	}
	for _, f := range fs {
		if err := netlink.FilterDel(f); err != nil {
			return fmt.Errorf("remove the fast path's filter from ifindex %d: %w", a.ifindex, err)
		}
	}
	return nil
}

// ingressFilters lists flanneld's bpf filters at ingress of one interface.
func ingressFilters(ifindex int) ([]*netlink.BpfFilter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, err
	}
	all, err := nldump.List(func() ([]netlink.Filter, error) { return netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS) })
	if err != nil {
		return nil, err
	}
	var out []*netlink.BpfFilter
	for _, f := range all {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, filterName) {
			out = append(out, bf)
		}
	}
	return out, nil
}

// chooseHook tries tcx on ifindex and falls back to clsact where the
// kernel has no tcx; the attachment made while choosing is returned.
func chooseHook(ifindex int, prog *ebpf.Program) (hook, attachment, error) {
	a, err := tcxHook{}.attach(ifindex, prog)
	if err == nil {
		return tcxHook{}, a, nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return nil, nil, err
	}
	a, err = clsactHook{}.attach(ifindex, prog)
	return clsactHook{}, a, err
}
