package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flannelgo/flannel/internal/harness/testbed/tbtest"
	"github.com/flannelgo/flannel/internal/subnetenv"
)

// These tests drive the built plugin with the real cnitool, bridge,
// host-local and portmap, against network namespaces. cnitool runs inside a
// "node" namespace, because bridge creates cni0 and the veth host ends in
// the namespace it runs in, and in a private mount namespace with a
// temporary directory bound on /var/lib, so that libcni's cache and
// host-local's store (both under /var/lib/cni) stay inside the test.

var (
	podNetwork = netip.MustParsePrefix("10.244.0.0/16")
	podSubnet  = netip.MustParsePrefix("10.244.1.0/24")
	podGateway = netip.MustParseAddr("10.244.1.1")
)

const cycles = 20

type harness struct {
	t        *testing.T
	id       string // random, keeps concurrent runs apart
	toolsDir string
	cniPath  string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	tbtest.NeedRoot(t, "ip", "unshare", "mount", "ping", "sh")
	tbtest.NeedRangesFree(t)
	toolsDir := os.Getenv("FLANNELGO_CNI_BIN")
	if toolsDir == "" {
		toolsDir = "/opt/cni/bin" // where scripts/setup.sh installs them
	}
	script, err := filepath.Abs("../../scripts/install-cni-tools.sh")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(script, toolsDir).CombinedOutput(); err != nil {
		// An install failure is a failure, never a skip: CI must not pass
		// without having run the plugin.
		t.Fatalf("reference CNI tools (cnitool, bridge, host-local, portmap) missing in %s and %s failed: %v\n%s",
			toolsDir, script, err, out)
	}
	binDir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "flannel"), ".").CombinedOutput(); err != nil {
		t.Fatalf("build the flannel plugin: %v\n%s", err, out)
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return &harness{
		t:        t,
		id:       hex.EncodeToString(b),
		toolsDir: toolsDir,
		cniPath:  binDir + string(os.PathListSeparator) + toolsDir,
	}
}

// netns creates a named network namespace with lo up and removes it at the
// end of the test.
func (h *harness) netns(role string) string {
	h.t.Helper()
	return tbtest.NS(h.t, fmt.Sprintf("tcn-%s-%s", h.id, role))
}

// node is one node namespace with its own conflist, subnet.env, plugin
// data dir and /var/lib.
type node struct {
	h                   *harness
	ns                  string
	confDir, varLib     string
	subnetFile, dataDir string
}

func (h *harness) node(cniVersion string) *node {
	h.t.Helper()
	dir := h.t.TempDir()
	n := &node{
		h:          h,
		ns:         h.netns("node"),
		confDir:    filepath.Join(dir, "net.d"),
		varLib:     filepath.Join(dir, "varlib"),
		subnetFile: filepath.Join(dir, "run", "subnet.env"),
		dataDir:    filepath.Join(dir, "flannel-data"),
	}
	for _, d := range []string{n.confDir, filepath.Join(n.varLib, "cni")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			h.t.Fatal(err)
		}
	}
	// kube-flannel's cni-conf.json, with the two paths pointed at the test.
	conflist := fmt.Sprintf(`{
  "name": "cbr0",
  "cniVersion": %q,
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      },
      "subnetFile": %q,
      "subnetFileWait": "500ms",
      "dataDir": %q
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
`, cniVersion, n.subnetFile, n.dataDir)
	if err := os.WriteFile(filepath.Join(n.confDir, "10-flannel.conflist"), []byte(conflist), 0o644); err != nil {
		h.t.Fatal(err)
	}
	n.writeSubnetEnv()
	return n
}

func (n *node) writeSubnetEnv() {
	n.h.t.Helper()
	err := subnetenv.Write(n.subnetFile, &subnetenv.Env{
		Network: podNetwork,
		Subnet:  netip.MustParsePrefix("10.244.1.1/24"),
		MTU:     1450,
		IPMasq:  true,
	})
	if err != nil {
		n.h.t.Fatal(err)
	}
}

func (n *node) removeSubnetEnv() {
	n.h.t.Helper()
	if err := os.Remove(n.subnetFile); err != nil {
		n.h.t.Fatal(err)
	}
}

// cnitool runs `cnitool <verb> cbr0 <netns path>` inside the node
// namespace and returns its stdout and stderr.
func (n *node) cnitool(verb, pod string) (string, string, error) {
	cmd := exec.Command("ip", "netns", "exec", n.ns,
		"unshare", "--mount", "--propagation", "private",
		"sh", "-c", `mount --bind "$0" /var/lib && exec "$@"`, n.varLib,
		filepath.Join(n.h.toolsDir, "cnitool"), verb, "cbr0", filepath.Join("/var/run/netns", pod))
	cmd.Env = append(os.Environ(), "NETCONFPATH="+n.confDir, "CNI_PATH="+n.h.cniPath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func (n *node) mustCnitool(verb, pod string) string {
	n.h.t.Helper()
	out, errOut, err := n.cnitool(verb, pod)
	if err != nil {
		n.h.t.Fatalf("cnitool %s %s: %v\nstdout: %s\nstderr: %s", verb, pod, err, out, errOut)
	}
	return out
}

// add runs ADD and returns the pod's address from the result.
func (n *node) add(pod string) netip.Addr {
	n.h.t.Helper()
	out := n.mustCnitool("add", pod)
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		n.h.t.Fatalf("cnitool add %s printed %q: %v", pod, out, err)
	}
	if len(res.IPs) != 1 {
		n.h.t.Fatalf("ADD result has %d IPs, want 1: %s", len(res.IPs), out)
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		n.h.t.Fatalf("ADD result address: %v", err)
	}
	return p.Addr()
}

// allocated lists the addresses host-local holds for the network.
func (n *node) allocated() []string {
	n.h.t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.varLib, "cni", "networks", "cbr0"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		n.h.t.Fatal(err)
	}
	var ips []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

func (n *node) savedConfigs() []string {
	n.h.t.Helper()
	entries, err := os.ReadDir(n.dataDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		n.h.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func handle(t *testing.T, ns string) *netlink.Handle { return tbtest.Handle(t, ns) }

// assertPod checks eth0 in the pod: its address, MTU and routes.
func assertPod(t *testing.T, pod string, want netip.Addr) {
	t.Helper()
	h := handle(t, pod)
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("pod %s: eth0: %v", pod, err)
	}
	if mtu := link.Attrs().MTU; mtu != 1450 {
		t.Errorf("pod %s: eth0 MTU %d, want 1450", pod, mtu)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 {
		t.Fatalf("pod %s: eth0 has %d IPv4 addresses, want 1: %v", pod, len(addrs), addrs)
	}
	got, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	if ones, _ := addrs[0].Mask.Size(); got != want || ones != 24 || !podSubnet.Contains(got) {
		t.Errorf("pod %s: eth0 has %s, want %s/24 inside %s", pod, addrs[0].IPNet, want, podSubnet)
	}
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var haveDefault, haveNetwork bool
	for _, r := range routes {
		gw, _ := netip.AddrFromSlice(r.Gw.To4())
		if gw != podGateway {
			continue
		}
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			haveDefault = true
		} else if r.Dst.String() == podNetwork.String() {
			haveNetwork = true
		}
	}
	if !haveDefault || !haveNetwork {
		t.Errorf("pod %s: want a default route and %s via %s; routes: %v", pod, podNetwork, podGateway, routes)
	}
}

func assertBridge(t *testing.T, nodeNS string) {
	t.Helper()
	h := handle(t, nodeNS)
	br, err := h.LinkByName("cni0")
	if err != nil {
		t.Fatalf("node %s: cni0: %v", nodeNS, err)
	}
	if br.Type() != "bridge" {
		t.Errorf("node %s: cni0 is a %s, want a bridge", nodeNS, br.Type())
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == "10.244.1.1/24" {
			return
		}
	}
	t.Errorf("node %s: cni0 addresses %v, want 10.244.1.1/24", nodeNS, addrs)
}

func assertNoPodInterfaces(t *testing.T, nodeNS string, pods ...string) {
	t.Helper()
	links, err := handle(t, nodeNS).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "veth" {
			t.Errorf("node %s: veth %s left behind", nodeNS, l.Attrs().Name)
		}
	}
	for _, pod := range pods {
		if _, err := handle(t, pod).LinkByName("eth0"); err == nil {
			t.Errorf("pod %s: eth0 left behind", pod)
		}
	}
}

func ping(t *testing.T, fromNS string, to netip.Addr) {
	t.Helper()
	tbtest.Ping(t, fromNS, to, 56, false)
}

func TestCnitoolKubeFlannelConflist(t *testing.T) {
	h := newHarness(t)
	for _, v := range []string{"0.3.1", "1.0.0", "1.1.0"} {
		t.Run("cniVersion="+v, func(t *testing.T) {
			h := *h
			h.t = t
			runConflist(t, &h, v)
		})
	}
}

func runConflist(t *testing.T, h *harness, cniVersion string) {
	n := h.node(cniVersion)
	pod1, pod2, pod3 := h.netns("pod1"), h.netns("pod2"), h.netns("pod3")

	ip1 := n.add(pod1)
	assertPod(t, pod1, ip1)
	assertBridge(t, n.ns)
	if got := n.savedConfigs(); len(got) != 1 {
		t.Errorf("saved delegate configs %v, want one", got)
	}
	// Proves the store is where allocated() looks, so that the final
	// "nothing left" check means something.
	if got := n.allocated(); len(got) != 1 || got[0] != ip1.String() {
		t.Errorf("host-local store holds %v, want [%s]", got, ip1)
	}
	// libcni refuses CHECK below 0.4.0 itself, without calling plugins.
	if cniVersion != "0.3.1" {
		n.mustCnitool("check", pod1)
	}
	if cniVersion == "1.1.0" {
		n.mustCnitool("status", pod1)
	}

	ip2 := n.add(pod2)
	assertPod(t, pod2, ip2)
	if ip1 == ip2 {
		t.Fatalf("both pods got %s", ip1)
	}
	ping(t, pod1, ip2)
	ping(t, pod2, ip1)
	ping(t, pod1, podGateway)
	n.mustCnitool("del", pod2)

	// subnet.env gone (flanneld down): ADD and STATUS fail and say why,
	// DEL still works from the saved config.
	n.removeSubnetEnv()
	for _, verb := range []string{"add", "status"} {
		if verb == "status" && cniVersion != "1.1.0" {
			continue
		}
		out, errOut, err := n.cnitool(verb, pod3)
		msg := out + errOut
		if err == nil {
			t.Errorf("cnitool %s without subnet.env succeeded: %s", verb, msg)
		}
		wants := []string{n.subnetFile, "failed to load flannel 'subnet.env' file", "flanneld has not written"}
		if verb == "add" {
			wants = append(wants, "flanneld is not ready: "+n.subnetFile+" did not appear within 500ms")
		}
		for _, want := range wants {
			if !strings.Contains(msg, want) {
				t.Errorf("cnitool %s without subnet.env: output %q does not say %q", verb, msg, want)
			}
		}
	}
	n.mustCnitool("del", pod1)
	assertNoPodInterfaces(t, n.ns, pod1, pod2, pod3)
	// Never added: DEL must succeed all the same.
	n.mustCnitool("del", pod3)
	n.writeSubnetEnv()

	for i := 0; i < cycles; i++ {
		pod := pod1
		if i%2 == 1 {
			pod = pod2
		}
		ip := n.add(pod)
		if !podSubnet.Contains(ip) {
			t.Fatalf("cycle %d: %s got %s, outside %s", i, pod, ip, podSubnet)
		}
		if i == cycles-1 {
			assertPod(t, pod, ip)
		}
		n.mustCnitool("del", pod)
	}
	assertNoPodInterfaces(t, n.ns, pod1, pod2)
	if got := n.allocated(); len(got) != 0 {
		t.Errorf("host-local still holds %v after %d ADD/DEL cycles", got, cycles)
	}
	if got := n.savedConfigs(); len(got) != 0 {
		t.Errorf("saved delegate configs left behind: %v", got)
	}
}
