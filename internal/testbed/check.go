package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/backend"
)

// labRanges are the address ranges a testbed uses inside its namespaces. The
// host must not use them: an operator reading `ip route` on the host, or a
// lab process that leaks out, must not meet the same addresses twice.
func labRanges() []netip.Prefix {
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
	if !labName.MatchString(name) {
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
	if err := CheckHostRanges(LabRanges()...); err != nil {
		return fmt.Errorf("testbed %s: %w", name, err)
	}
	return nil
}

// LabRanges are the address ranges every testbed and every namespace test
// uses: the two underlay segments and the pod network, IPv4 and IPv6.
func LabRanges() []netip.Prefix { return labRanges() }

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
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if p, ok := backend.PrefixOf(a.IPNet); ok {
			out = append(out, usedPrefix{p.Masked(), "address " + a.IPNet.String()})
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		// A default route covers everything and claims nothing.
		if p, ok := backend.PrefixOf(r.Dst); ok && p.Bits() > 0 {
			out = append(out, usedPrefix{p.Masked(), fmt.Sprintf("route %s table %d", p, r.Table)})
		}
	}
	return out, nil
}

func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var v []T
		if v, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return nil, err
}

// Cleanup removes testbed name without needing the process that built it:
// it stops the processes recorded in stateDir (only those whose pid still
// names the process started: same start time and command), deletes every
// namespace fl-<name>-* and removes stateDir ("" = the default). It is
// idempotent.
func Cleanup(ctx context.Context, name, stateDir string) error {
	if !labName.MatchString(name) {
		return fmt.Errorf("testbed name %q: use 1 to 12 characters a-z, 0-9", name)
	}
	if stateDir == "" {
		stateDir = filepath.Join(DefaultStateRoot, name)
	}
	var errs []error
	procs, err := readPidFiles(stateDir)
	errs = append(errs, err)
	var etcd, rest []*Proc
	for _, p := range procs {
		klog.V(2).Infof("testbed %s: stopping pid %d (%s)", name, p.Pid, p.Argv[0])
		if p.Role == roleEtcd {
			etcd = append(etcd, p)
		} else {
			rest = append(rest, p)
		}
	}
	errs = append(errs, stopConcurrently(rest), stopConcurrently(etcd))
	nss, err := ListNS(nsPrefix(name))
	errs = append(errs, err)
	for _, ns := range sortPodsFirst(nss) {
		errs = append(errs, DeleteNS(ns))
	}
	errs = append(errs, removeState(stateDir, false))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up testbed %s: %w", name, err)
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

// removeState deletes what the testbed keeps in stateDir, and stateDir
// itself once empty. It deletes only its own entries: StateDir may have
// been pointed at a directory holding other things. With keepLogs only the
// entries that say the testbed is up go (topology, pid files); logs, node
// directories and etcd data stay for a post-mortem.
func removeState(stateDir string, keepLogs bool) error {
	entries := []string{"topology.json", "topology.json.tmp", "pids"}
	if !keepLogs {
		entries = append(entries, "nodes", "etcd")
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(stateDir, e)); err != nil {
			errs = append(errs, fmt.Errorf("remove state: %w", err))
		}
	}
	if !keepLogs {
		if err := os.Remove(stateDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove state dir: %w", err))
		}
	}
	return errors.Join(errs...)
}
