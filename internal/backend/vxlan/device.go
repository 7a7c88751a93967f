package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
	"github.com/flannelgo/flannel/internal/offload"
)

// deviceSpec is what the VXLAN device must look like.
type deviceSpec struct {
	name     string
	vni      int
	port     int
	vtepDev  int
	srcAddr  netip.Addr
	learning bool
	gbp      bool
	mtu      int
	mac      net.HardwareAddr // nil: the kernel picks one
	// noTxChecksum forces tx-checksum-ip-generic off (see internal/offload).
	noTxChecksum bool
}

// ensureDevice makes the device (ensureLink) and then, on kernels before
// 5.7 or when the config asks, turns its checksum offload off: every path
// that creates or re-creates the device passes here, so a fresh device
// never keeps the offload on.
func ensureDevice(h *netlink.Handle, s deviceSpec) (*netlink.Vxlan, error) {
	vx, err := ensureLink(h, s)
	if err != nil {
		return nil, err
	}
	old, rel := offload.KernelNeedsFix()
	if !old && !s.noTxChecksum {
		return vx, nil
	}
	if err := offload.DisableTxChecksum(s.name); err != nil {
		return nil, fmt.Errorf("%w (needed on kernel %s, or with DisableTxChecksumOffload, against corrupt VXLAN checksums)", err, rel)
	}
	klog.Infof("turned %s off on %s (kernel %s, DisableTxChecksumOffload=%v)", offload.Feature, s.name, rel, s.noTxChecksum)
	return vx, nil
}

// ensureLink reuses a compatible device left by a previous run, which
// keeps its MAC (and so every peer's FDB entry for us) valid across
// restarts; an incompatible one is replaced.
func ensureLink(h *netlink.Handle, s deviceSpec) (*netlink.Vxlan, error) {
	existing, err := h.LinkByName(s.name)
	if err == nil {
		if vx, ok := existing.(*netlink.Vxlan); ok && compatible(vx, s) {
			if vx.MTU != s.mtu {
				if err := h.LinkSetMTU(vx, s.mtu); err != nil {
					return nil, fmt.Errorf("set MTU %d on %s: %w", s.mtu, s.name, err)
				}
			}
			klog.Infof("reusing existing VXLAN device %s (VNI %d, MAC %s)", s.name, s.vni, vx.HardwareAddr)
			return refresh(h, s.name)
		}
		klog.Warningf("VXLAN device %s exists with different settings; recreating it", s.name)
		if err := h.LinkDel(existing); err != nil {
			return nil, fmt.Errorf("delete incompatible device %s: %w", s.name, err)
		}
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("look up device %s: %w", s.name, err)
	}
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: s.name, MTU: s.mtu, HardwareAddr: s.mac},
		VxlanId:      s.vni,
		VtepDevIndex: s.vtepDev,
		Port:         s.port,
		Learning:     s.learning,
		GBP:          s.gbp,
	}
	if s.srcAddr.IsValid() {
		vx.SrcAddr = net.IP(s.srcAddr.AsSlice())
	}
	if err := h.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create VXLAN device %s (VNI %d, port %d): %w", s.name, s.vni, effectivePort(s.port), err)
	}
	klog.Infof("created VXLAN device %s (VNI %d, port %d, MTU %d)", s.name, s.vni, effectivePort(s.port), s.mtu)
	return refresh(h, s.name)
}

func refresh(h *netlink.Handle, name string) (*netlink.Vxlan, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("read back device %s: %w", name, err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return nil, fmt.Errorf("device %s is a %s, not vxlan", name, l.Type())
	}
	return vx, nil
}

func compatible(vx *netlink.Vxlan, s deviceSpec) bool {
	src, _ := netip.AddrFromSlice(vx.SrcAddr)
	return vx.VxlanId == s.vni &&
		vx.VtepDevIndex == s.vtepDev &&
		effectivePort(vx.Port) == effectivePort(s.port) &&
		vx.Learning == s.learning &&
		vx.GBP == s.gbp &&
		src.Unmap() == s.srcAddr
}

func effectivePort(p int) int {
	if p == 0 {
		return kernelDefaultPort
	}
	return p
}

// ensureOnlyAddress gives the device exactly one address of want's family
// (IPv6 link-local addresses, which the kernel manages, aside): a leftover
// address from a previous subnet would make the kernel answer for it. It
// says whether it had to change anything.
func ensureOnlyAddress(h *netlink.Handle, link netlink.Link, want netip.Prefix) (bool, error) {
	family := netlink.FAMILY_V4
	if want.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return h.AddrList(link, family) })
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	have, changed := false, false
	for _, a := range addrs {
		p, ok := ipnet.Prefix(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		if ok && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		klog.Infof("removing stale address %s from %s", a.IPNet, link.Attrs().Name)
		if err := h.AddrDel(link, &a); err != nil {
			return true, fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
		changed = true
	}
	if have {
		return changed, nil
	}
	addr := &netlink.Addr{IPNet: ipnet.FromPrefix(want)}
	if want.Addr().Is6() {
		// Duplicate address detection would hold the address back as
		// tentative for a second or more; the lease already makes it unique.
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, addr); err != nil {
		return true, fmt.Errorf("add address %s to %s: %w", want, link.Attrs().Name, err)
	}
	return true, nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}
