package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelgo/flannel/internal/ipnet"
	"github.com/flannelgo/flannel/internal/nldump"
)

// Ranges are the address ranges every testbed and every namespace test
// uses inside its namespaces: the two underlay segments and the pod
// network, IPv4 and IPv6. The host must not use them: an operator reading
// `ip route` on the host, or a test process that leaks out, must not meet
// the same addresses twice.
func Ranges() []netip.Prefix {
	return []netip.Prefix{
		SegmentPrefix(1, false), SegmentPrefix(2, false),
		netip.MustParsePrefix("10.244.0.0/16"),
		SegmentPrefix(1, true), SegmentPrefix(2, true),
		netip.MustParsePrefix("fd00:10:244::/56"),
	}
}

// CheckRangesFree verifies, before a testbed called name is built, that the
// calling (root) namespace has no address or route overlapping the testbed's
// ranges and that no namespace of an earlier testbed with this name is left.
func CheckRangesFree(name string) error {
	if !testbedName.MatchString(name) {
		return fmt.Errorf("testbed name %q: use 1 to 12 characters a-z, 0-9", name)
	}
	left, err := ListNS(nsPrefix(name))
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("testbed %s: namespaces %s are left from an earlier run; run `flannelctl lab down --name %s` first",
			name, strings.Join(left, ", "), name)
	}
	if err := CheckHostRanges(Ranges()...); err != nil {
		return fmt.Errorf("testbed %s: %w", name, err)
	}
	return nil
}

// CheckHostRanges is the one range check of the project's tests: it fails
// when the calling (root) namespace has an address or a non-default route,
// in any routing table, that overlaps one of ranges. It only reads.
func CheckHostRanges(ranges ...netip.Prefix) error {
	used, err := hostPrefixes()
	if err != nil {
		return fmt.Errorf("read host addresses and routes: %w", err)
	}
	for _, r := range ranges {
		for _, u := range used {
			if u.p.Overlaps(r) {
				return fmt.Errorf("this host uses %s (%s), which overlaps the test range %s; namespace tests cannot run here", u.p, u.what, r)
			}
		}
	}
	return nil
}

type usedPrefix struct {
	p    netip.Prefix
	what string
}

// hostPrefixes lists the caller namespace's addresses and non-default
// routes, in all routing tables.
func hostPrefixes() ([]usedPrefix, error) {
	var out []usedPrefix
	addrs, err := nldump.List(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if p, ok := ipnet.Prefix(a.IPNet); ok {
			out = append(out, usedPrefix{p.Masked(), "address " + a.IPNet.String()})
		}
	}
	routes, err := nldump.List(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		// A default route covers everything and claims nothing.
		if p, ok := ipnet.Prefix(r.Dst); ok && p.Bits() > 0 {
			out = append(out, usedPrefix{p.Masked(), fmt.Sprintf("route %s table %d", p, r.Table)})
		}
	}
	return out, nil
}

// Remove deletes what a testbed called name left behind, without the
// process that built it: every namespace fl-<name>-* (pods first) and the
// testbed's entries in stateDir. It stops no process: only a recorder
// (internal/tools/lab) knows them. It is idempotent.
func Remove(name, stateDir string) error {
	if !testbedName.MatchString(name) {
		return fmt.Errorf("testbed name %q: use 1 to 12 characters a-z, 0-9", name)
	}
	nss, err := ListNS(nsPrefix(name))
	errs := []error{err}
	for _, ns := range sortPodsFirst(nss) {
		errs = append(errs, DeleteNS(ns))
	}
	if stateDir != "" {
		errs = append(errs, removeState(stateDir, false))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove testbed %s: %w", name, err)
	}
	return nil
}

// sortPodsFirst orders namespaces so pods (fl-x-n1-p1) go before nodes
// and nodes before the hub.
func sortPodsFirst(nss []string) []string {
	rank := func(ns string) int {
		switch {
		case strings.Count(ns, "-") >= 3:
			return 0
		case strings.HasSuffix(ns, "-hub"):
			return 2
		default:
			return 1
		}
	}
	out := append([]string(nil), nss...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// removeState deletes what the testbed keeps in stateDir (node
// directories, etcd data), and stateDir itself once empty; with keepLogs
// nothing. It deletes only its own entries: StateDir may have been pointed
// at a directory holding other things (`flannelctl lab` keeps its own
// record there).
func removeState(stateDir string, keepLogs bool) error {
	if keepLogs {
		return nil
	}
	var errs []error
	for _, e := range []string{"nodes", "etcd"} {
		if err := os.RemoveAll(filepath.Join(stateDir, e)); err != nil {
			errs = append(errs, fmt.Errorf("remove state: %w", err))
		}
	}
	if err := os.Remove(stateDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		errs = append(errs, fmt.Errorf("remove state dir: %w", err))
	}
	return errors.Join(errs...)
}
