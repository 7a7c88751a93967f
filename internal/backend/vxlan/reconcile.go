package vxlan

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
)

// check restores what the stack's peers rest on, before the engine
// repairs their entries: the device (re-created with its old MAC, so
// peers' FDB entries for this node stay valid), its MTU, address and up
// state; and with DirectRouting, which peers share this node's segment.
// Repairs are counted in r by kind.
func (s *stack) check(r backend.Repairs) error {
	if err := s.repairDevice(r); err != nil {
		return err
	}
	s.redirect()
	return nil
}

func (s *stack) repairDevice(r backend.Repairs) error {
	vx, err := refresh(s.b.nl, s.spec.name)
	if err != nil || vx.Index != s.dev.Index || !compatible(vx, s.spec) {
		klog.Warningf("vxlan: device %s is gone or was replaced; re-creating it with MAC %s", s.spec.name, s.spec.mac)
		if vx, err = ensureDevice(s.b.nl, s.spec); err != nil {
			return fmt.Errorf("re-create %s: %w", s.spec.name, err)
		}
		r.Add("device")
	}
	if vx.Index != s.dev.Index {
		// Every peer's route now goes out of the new device.
		s.routes.Relink(s.dev.Index, vx.Index)
		s.dev = vx
		s.set.Rebuild()
	}
	s.dev = vx
	if s.spec.mac != nil && vx.HardwareAddr.String() != s.spec.mac.String() {
		if err := s.b.nl.LinkSetHardwareAddr(vx, s.spec.mac); err != nil {
			return fmt.Errorf("restore MAC %s of %s (peers' FDB entries point to it): %w", s.spec.mac, vx.Name, err)
		}
		r.Add("device")
	}
	if vx.MTU != s.spec.mtu {
		if err := s.b.nl.LinkSetMTU(vx, s.spec.mtu); err != nil {
			return fmt.Errorf("restore MTU %d of %s: %w", s.spec.mtu, vx.Name, err)
		}
		r.Add("device")
	}
	if !s.own.IsValid() {
		return nil // not activated yet
	}
	changed, err := ensureOnlyAddress(s.b.nl, vx, netip.PrefixFrom(s.own.Addr(), s.own.Addr().BitLen()))
	if err != nil {
		return err
	}
	if changed {
		r.Add("address")
	}
	if vx.Flags&net.FlagUp == 0 {
		if err := s.b.nl.LinkSetUp(vx); err != nil {
			return fmt.Errorf("bring up %s: %w", vx.Name, err)
		}
		r.Add("device")
	}
	return nil
}

// redirect re-checks, with DirectRouting, which peers share this node's
// segment: an interface flap or a re-addressed underlay moves a peer
// between a plain route and the overlay.
func (s *stack) redirect() {
	if !s.b.opts.DirectRouting {
		return
	}
	moved := map[string]peer{}
	s.set.Each(func(key string, p peer) {
		if direct := backend.CheckOnSegment(s.b.nl, s.b.ext.Iface.Index, p.publicIP) == nil; direct != p.direct {
			p.direct = direct
			moved[key] = p
		}
	})
	for key, p := range moved {
		s.set.Set(key, p)
	}
}

func (s *stack) netlinkFamily() int {
	if s.v6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}
