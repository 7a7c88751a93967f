package antispoof

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/version"
)

const bridgeResult = `{"cniVersion":"1.0.0",
 "interfaces":[{"name":"cni0","mac":"aa:aa:aa:aa:aa:aa"},{"name":"veth12345678","mac":"bb:bb:bb:bb:bb:bb"},
  {"name":"eth0","mac":"0A:58:0A:F4:01:05","sandbox":"/var/run/netns/cni-1"}],
 "ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":2},
  {"address":"fd00:10:244:1::5/64","interface":2}]}`

func TestFromResult(t *testing.T) {
	res, err := version.NewResult("1.0.0", []byte(bridgeResult))
	if err != nil {
		t.Fatal(err)
	}
	p, err := FromResult(res, "c1", "cni0", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0")
	if err != nil {
		t.Fatal(err)
	}
	if p.HostIf != "veth12345678" || p.MAC != "0a:58:0a:f4:01:05" || p.Namespace != "ns1" || p.Name != "web-0" ||
		len(p.IPs) != 2 || p.IPs[0] != netip.MustParseAddr("10.244.1.5") || p.IPs[1] != netip.MustParseAddr("fd00:10:244:1::5") {
		t.Errorf("FromResult = %+v", p)
	}
	// Without the bridge's name (libcni's cache), the first interface
	// outside the sandbox is the bridge, as the bridge plugin lists it.
	if q, err := FromResult(res, "c1", "", ""); err != nil || q.HostIf != "veth12345678" || q.Bridge != "cni0" {
		t.Errorf("FromResult without bridge name = %+v, %v", q, err)
	}
	noVeth, _ := version.NewResult("1.0.0", []byte(`{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.244.1.5/24","interface":0}]}`))
	if _, err := FromResult(noVeth, "c1", "cni0", ""); err == nil {
		t.Error("a result without a host-side veth was accepted")
	}
}

// A record that would put foreign syntax into an nft transaction is
// refused when written and when read.
func TestRecordsRefuseWhatCannotBeRules(t *testing.T) {
	dir := t.TempDir()
	good := Pod{ContainerID: "c1", Bridge: "cni0", HostIf: "veth1", MAC: "0a:58:0a:f4:01:05", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5")}}
	if err := WriteRecord(dir, good); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]Pod{
		"quote in name":  {ContainerID: "c2", Bridge: "cni0", HostIf: `veth"; flush ruleset`, MAC: good.MAC, IPs: good.IPs},
		"long name":      {ContainerID: "c2", Bridge: "cni0", HostIf: "veth0123456789abcdef", MAC: good.MAC, IPs: good.IPs},
		"bad MAC":        {ContainerID: "c2", Bridge: "cni0", HostIf: "veth2", MAC: "0a:58", IPs: good.IPs},
		"no addresses":   {ContainerID: "c2", Bridge: "cni0", HostIf: "veth2", MAC: good.MAC},
		"path in the ID": {ContainerID: "../c2", Bridge: "cni0", HostIf: "veth2", MAC: good.MAC, IPs: good.IPs},
	} {
		if err := WriteRecord(dir, p); err == nil {
			t.Errorf("%s: WriteRecord accepted %+v", name, p)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "forged"), []byte(`{"containerID":"forged","bridge":"cni0","hostInterface":"veth\"x","mac":"0a:58:0a:f4:01:05","ips":["10.244.1.9"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pods, err := ReadRecords(dir)
	if len(pods) != 1 || pods[0].HostIf != "veth1" {
		t.Errorf("ReadRecords = %+v, want only the good record", pods)
	}
	if err == nil || !strings.Contains(err.Error(), "forged") {
		t.Errorf("ReadRecords error = %v, want one naming the bad record", err)
	}
	if err := RemoveRecord(dir, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveRecord(dir, "c1"); err != nil {
		t.Errorf("removing a record twice: %v", err)
	}
}

// Pods added before the plugin kept records are read from libcni's cache,
// in whatever CNI version their result was cached.
func TestReadCNICache(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "results"), 0o700); err != nil {
		t.Fatal(err)
	}
	entry := `{"kind":"cniCacheV1","containerId":"abc","ifName":"eth0","networkName":"cbr0",
	 "cniArgs":[["K8S_POD_NAMESPACE","kube-system"],["K8S_POD_NAME","coredns-1"]],"result":` + bridgeResult + `}`
	if err := os.WriteFile(filepath.Join(dir, "results", "cbr0-abc-eth0"), []byte(entry), 0o600); err != nil {
		t.Fatal(err)
	}
	old := `{"kind":"cniCacheV1","containerId":"def","result":{"cniVersion":"0.3.1","interfaces":[{"name":"cni0"},{"name":"vethdef"},{"name":"eth0","mac":"0a:58:0a:f4:01:06","sandbox":"/x"}],"ips":[{"version":"4","address":"10.244.1.6/24","interface":2}]}}`
	if err := os.WriteFile(filepath.Join(dir, "results", "cbr0-def-eth0"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	// containerd caches its loopback network's result too: no bridge port,
	// nothing to pin, nothing to complain about.
	lo := `{"kind":"cniCacheV1","containerId":"abc","ifName":"lo","networkName":"cni-loopback","result":{"cniVersion":"1.1.0","interfaces":[{"name":"lo","mac":"00:00:00:00:00:00","sandbox":"/var/run/netns/cni-1"}],"ips":[{"interface":0,"address":"127.0.0.1/8"}]}}`
	if err := os.WriteFile(filepath.Join(dir, "results", "cni-loopback-abc-lo"), []byte(lo), 0o600); err != nil {
		t.Fatal(err)
	}
	pods, err := ReadCNICache(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 || pods[0].Name != "coredns-1" || pods[0].HostIf != "veth12345678" || pods[1].HostIf != "vethdef" {
		t.Errorf("ReadCNICache = %+v", pods)
	}
}
