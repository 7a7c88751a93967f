package antispoof

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// TableName is the bridge-family table that holds the pinning rules;
// flanneld owns it alone.
const TableName = "flannel-antispoof"

// Names inside the table.
const (
	setPorts    = "ports"    // every port of a pod bridge: these are policed
	setMACs     = "macs"     // port . the pod's MAC
	setAddrs4   = "addrs4"   // port . an IPv4 address of the pod
	setAddrs6   = "addrs6"   // port . an IPv6 address of the pod
	setTargets  = "ndtarget" // port . an IPv6 address, as the target field of a neighbour advertisement
	mapCounters = "cnt"      // port : its drop counter
	unknownCtr  = "unknown"  // drops of ports with no counter yet
	spoofChain  = "spoofed"
)

var sets = []knftables.Set{
	{Name: setPorts, Type: "ifname"},
	{Name: setMACs, Type: "ifname . ether_addr"},
	{Name: setAddrs4, Type: "ifname . ipv4_addr"},
	{Name: setAddrs6, Type: "ifname . ipv6_addr"},
	// The target address of a neighbour advertisement has no nft keyword
	// in the nft versions nodes run (1.0.x), so it is read as the 128 bits
	// after the ICMPv6 header's first 8 bytes.
	{Name: setTargets, TypeOf: "iifname . @th,64,128"},
}

// chains, in the order they are written: a chain's jumps name only chains
// written before it.
var chains = []struct {
	name  string
	rules []string
}{
	{spoofChain, []string{
		"counter name iifname map @" + mapCounters + " drop",
		"counter name " + unknownCtr + " drop",
	}},
	{"from-arp", []string{
		// An ARP probe (RFC 5227) asks with sender address 0.0.0.0.
		"arp operation request arp saddr ip 0.0.0.0 accept",
		"iifname . arp saddr ip @" + setAddrs4 + " accept",
		"goto " + spoofChain,
	}},
	{"from-ip4", []string{
		"iifname . ip saddr @" + setAddrs4 + " accept",
		"goto " + spoofChain,
	}},
	// A pod answers neighbour solicitations for its own addresses only (or
	// a link-local one, which no route or policy uses): otherwise it could
	// take another pod's traffic from the node.
	{"nd-advert", []string{
		"ip6 saddr != fe80::/10 iifname . ip6 saddr != @" + setAddrs6 + " goto " + spoofChain,
		"@th,64,16 0xfe80 accept",
		"iifname . @th,64,128 @" + setTargets + " accept",
		"goto " + spoofChain,
	}},
	// Link-local and unspecified sources are what neighbour discovery,
	// duplicate address detection and MLD send before and beside the
	// pod's own addresses; nothing else may use them.
	{"from-ip6", []string{
		"icmpv6 type nd-neighbor-advert goto nd-advert",
		"iifname . ip6 saddr @" + setAddrs6 + " accept",
		"ip6 saddr fe80::/10 icmpv6 type { nd-router-solicit, nd-neighbor-solicit, mld-listener-report, mld-listener-done, mld2-listener-report } accept",
		"ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } accept",
		"goto " + spoofChain,
	}},
	// Any other EtherType is dropped too: a VLAN tag would hide the inner
	// header from these checks, and pods speak IP.
	{"prerouting", []string{
		"iifname != @" + setPorts + " accept",
		"iifname . ether saddr != @" + setMACs + " goto " + spoofChain,
		"ether type vmap { arp : goto from-arp, ip : goto from-ip4, ip6 : goto from-ip6 }",
		"goto " + spoofChain,
	}},
}

// Table writes pods' pins into the kernel.
type Table struct {
	nft knftables.Interface
	log string // the drop log's rule, first in the spoofed chain (droplog.go); empty: none
}

// NewTable connects to nftables (the nft binary must be installed).
func NewTable() (*Table, error) {
	nft, err := knftables.New(knftables.BridgeFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables for anti-spoofing (is the nft binary installed and the kernel built with nf_tables and its bridge family?): %w", err)
	}
	return &Table{nft: nft}, nil
}

func quote(ifname string) string { return `"` + ifname + `"` }

func counterName(ifname string) string { return "port-" + ifname }

// portFromCounter is counterName's inverse.
func portFromCounter(name string) (string, bool) {
	return strings.CutPrefix(strings.Trim(name, `"`), "port-")
}

// base declares the table and writes its chains anew; sets and their
// elements are left as they are.
func (t *Table) base(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("flanneld: each pod may send only from its own addresses")})
	for _, s := range sets {
		tx.Add(&s)
	}
	tx.Add(&knftables.Map{Name: mapCounters, Type: "ifname : counter"})
	tx.Add(&knftables.Counter{Name: unknownCtr})
	for _, c := range chains {
		ch := &knftables.Chain{Name: c.name}
		if c.name == "prerouting" {
			// Before anything else on the bridge: nothing may see a
			// forged frame first.
			ch.Type, ch.Hook = knftables.PtrTo(knftables.FilterType), knftables.PtrTo(knftables.PreroutingHook)
			ch.Priority = knftables.PtrTo(knftables.BaseChainPriority("-300"))
		}
		tx.Add(ch)
		tx.Flush(&knftables.Chain{Name: c.name})
		rules := c.rules
		if c.name == spoofChain && t.log != "" {
			rules = append([]string{t.log}, rules...)
		}
		for _, r := range rules {
			tx.Add(&knftables.Rule{Chain: c.name, Rule: r})
		}
	}
}

// addPort makes ifname a policed port with a counter of its own.
func addPort(tx *knftables.Transaction, ifname string) {
	tx.Add(&knftables.Element{Set: setPorts, Key: []string{quote(ifname)}})
	tx.Add(&knftables.Counter{Name: counterName(ifname)})
	tx.Add(&knftables.Element{Map: mapCounters, Key: []string{quote(ifname)}, Value: []string{quote(counterName(ifname))}})
}

// addPod lets p's port carry p's MAC and addresses.
func addPod(tx *knftables.Transaction, p Pod) {
	port := quote(p.HostIf)
	addPort(tx, p.HostIf)
	tx.Add(&knftables.Element{Set: setMACs, Key: []string{port, p.MAC}})
	for _, a := range p.IPs {
		if a.Is4() {
			tx.Add(&knftables.Element{Set: setAddrs4, Key: []string{port, a.String()}})
			continue
		}
		tx.Add(&knftables.Element{Set: setAddrs6, Key: []string{port, a.String()}})
		b := a.As16()
		tx.Add(&knftables.Element{Set: setTargets, Key: []string{port, "0x" + hex.EncodeToString(b[:])}})
	}
}

// Pin adds one pod's entries to a table flanneld has set up; it is what
// the CNI plugin calls before ADD returns. It reports pinned=false, and no
// error, when there is no table (anti-spoofing is off, or flanneld has not
// started yet and will pin the pod from its record).
func (t *Table) Pin(ctx context.Context, p Pod) (pinned bool, err error) {
	if err := p.valid(); err != nil {
		return false, fmt.Errorf("pin %s: %w", p, err)
	}
	tx := t.nft.NewTransaction()
	addPod(tx, p)
	err = t.nft.Run(ctx, tx)
	if knftables.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pin %s to its addresses in nftables table bridge %s: %w", p, TableName, err)
	}
	return true, nil
}

// Remove deletes the table; removed reports whether there was one.
func (t *Table) Remove(ctx context.Context) (removed bool, err error) {
	tx := t.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	err = t.nft.Run(ctx, tx)
	if knftables.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete nftables table bridge %s: %w", TableName, err)
	}
	return true, nil
}

// Drops are the packets dropped per port since its counter was made.
func (t *Table) Drops(ctx context.Context) (map[string]uint64, error) {
	cs, err := t.nft.ListCounters(ctx)
	if knftables.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list counters of nftables table bridge %s: %w", TableName, err)
	}
	out := map[string]uint64{}
	for _, c := range cs {
		if c.Packets == nil {
			continue
		}
		if port, ok := portFromCounter(c.Name); ok {
			out[port] = *c.Packets
		} else if strings.Trim(c.Name, `"`) == unknownCtr {
			out[""] += *c.Packets
		}
	}
	return out, nil
}

// Sync makes the table police every current bridge port, lets each pod of
// pods whose port is current use its own addresses, and removes what the
// table holds for ports that are gone. Entries of a current port that
// pods does not name are kept: the CNI plugin may have just pinned a pod
// whose record this caller read too early.
//
// ports is called after the table has been read: an entry whose port it
// does not list then belongs to a port that existed when the entry was
// made and is gone now. Read the other way round, a pod pinned in between
// would look stale and lose its entries.
func (t *Table) Sync(ctx context.Context, pods []Pod, ports func() (map[string]bool, error)) error {
	have, _, err := t.entries(ctx)
	if err != nil {
		return err
	}
	cur, err := ports()
	if err != nil {
		return err
	}
	tx := t.nft.NewTransaction()
	t.base(tx)
	for port, e := range have {
		if cur[port] {
			continue
		}
		for _, el := range e.elements {
			tx.Delete(el)
		}
		if e.counter {
			tx.Delete(&knftables.Counter{Name: counterName(port)})
		}
	}
	for port := range cur {
		addPort(tx, port)
	}
	for _, p := range pods {
		if cur[p.HostIf] {
			addPod(tx, p)
		}
	}
	if err := t.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("load anti-spoofing rules into nftables table bridge %s (%d operations): %w", TableName, tx.NumOperations(), err)
	}
	return nil
}

// portEntries is what the table holds for one port.
type portEntries struct {
	elements []*knftables.Element
	counter  bool
}

// entries reads the table's elements and counters by port; an empty map
// and present=false when there is no table yet.
func (t *Table) entries(ctx context.Context) (have map[string]*portEntries, present bool, err error) {
	out := map[string]*portEntries{}
	get := func(port string) *portEntries {
		if out[port] == nil {
			out[port] = &portEntries{}
		}
		return out[port]
	}
	lists := []struct{ kind, name string }{{"map", mapCounters}}
	for _, s := range sets {
		lists = append(lists, struct{ kind, name string }{"set", s.Name})
	}
	for _, l := range lists {
		els, err := t.nft.ListElements(ctx, l.kind, l.name)
		if knftables.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("list %s %s of nftables table bridge %s: %w", l.kind, l.name, TableName, err)
		}
		for _, el := range els {
			if len(el.Key) > 0 {
				e := get(strings.Trim(el.Key[0], `"`))
				e.elements = append(e.elements, el)
			}
		}
	}
	// The table always holds the "unknown" counter, so this listing also
	// tells whether there is a table.
	cs, err := t.nft.ListCounters(ctx)
	if knftables.IsNotFound(err) {
		return out, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("list counters of nftables table bridge %s: %w", TableName, err)
	}
	for _, c := range cs {
		if port, ok := portFromCounter(c.Name); ok {
			get(port).counter = true
		}
	}
	return out, true, nil
}

// Unpinned lists the policed ports that have no pod's entries: every frame
// they send is dropped. present is false when there is no table
// (anti-spoofing is off).
func (t *Table) Unpinned(ctx context.Context) (ports []string, present bool, err error) {
	have, present, err := t.entries(ctx)
	if err != nil || !present {
		return nil, present, err
	}
	for port, e := range have {
		inPorts, pinned := false, false
		for _, el := range e.elements {
			inPorts = inPorts || el.Set == setPorts
			pinned = pinned || el.Set == setMACs
		}
		if inPorts && !pinned {
			ports = append(ports, port)
		}
	}
	slices.Sort(ports)
	return ports, true, nil
}
