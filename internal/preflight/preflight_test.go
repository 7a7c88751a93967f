package preflight

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
)

// host lays out a fake /dev/net/tun (present or not) and a status file
// with the given effective capabilities.
func host(t *testing.T, tun bool, capEff string) Host {
	t.Helper()
	dir := t.TempDir()
	h := Host{DevTun: filepath.Join(dir, "tun"), ProcStatus: filepath.Join(dir, "status")}
	if tun {
		if err := os.WriteFile(h.DevTun, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	status := "Name:\tflanneld\nCapInh:\t0000000000000000\nCapEff:\t" + capEff + "\nCapBnd:\t000001ffffffffff\n"
	if err := os.WriteFile(h.ProcStatus, []byte(status), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// The shipped DaemonSet's capabilities: NET_ADMIN (12) and NET_RAW (13).
const netAdminRaw = "0000000000003000"

// With SYS_ADMIN (21) too.
const withSysAdmin = "0000000000203000"

// deploy/patches/ebpf.yaml's: also PERFMON (38) and BPF (39); and BPF
// alone.
const (
	withBPFPerfmon = "000000c000003000"
	withBPFOnly    = "0000008000003000"
)

func TestBackendsRefuseAContainerThatLacksTheirSetting(t *testing.T) {
	for _, tc := range []struct {
		name, backend string
		tun           bool
		caps          string
		want          []string // all in the error; none: no error
	}{
		{"vxlan needs nothing more", `{"Type":"vxlan"}`, false, netAdminRaw, nil},
		{"host-gw needs nothing more", `{"Type":"host-gw"}`, false, netAdminRaw, nil},
		{"udp without TUN", `{"Type":"udp"}`, false, netAdminRaw,
			[]string{"the udp backend needs the TUN device", `volume "tun"`, "path: /dev/net/tun, type: CharDevice", "mount it in the kube-flannel container at /dev/net/tun", "modprobe tun"}},
		{"udp with TUN", `{"Type":"udp"}`, true, netAdminRaw, nil},
		{"userspace WireGuard without TUN", `{"Type":"wireguard","Implementation":"userspace"}`, false, netAdminRaw,
			[]string{"the wireguard backend needs the TUN device", `"Implementation":"userspace"`, `volume "tun"`}},
		{"kernel WireGuard without TUN", `{"Type":"wireguard","Implementation":"kernel"}`, false, netAdminRaw, nil},
		{"ipsec without SYS_ADMIN", `{"Type":"ipsec","PSK":"x"}`, true, netAdminRaw,
			[]string{"the ipsec backend needs CAP_SYS_ADMIN", `add "SYS_ADMIN" to the kube-flannel container's securityContext.capabilities.add`}},
		{"ipsec with SYS_ADMIN", `{"Type":"ipsec","PSK":"x"}`, true, withSysAdmin, nil},
		{"eBPF fast path without BPF", `{"Type":"host-gw","Datapath":"ebpf"}`, false, netAdminRaw,
			[]string{`"Datapath": "ebpf" needs CAP_BPF`, "lacks CAP_BPF and CAP_PERFMON", "deploy/patches/ebpf.yaml", "flannel.datapath=ebpf"}},
		{"eBPF fast path without PERFMON", `{"Type":"vxlan","Datapath":"ebpf"}`, false, withBPFOnly,
			[]string{"lacks CAP_PERFMON:", "they read conntrack entries"}},
		{"eBPF fast path with BPF and PERFMON", `{"Type":"vxlan","Datapath":"ebpf"}`, false, withBPFPerfmon, nil},
		{"eBPF fast path with SYS_ADMIN", `{"Type":"host-gw","Datapath":"ebpf"}`, false, withSysAdmin, nil},
	} {
		cfg, err := config.Parse([]byte(`{"Network":"10.244.0.0/16","Backend":` + tc.backend + `}`))
		if err != nil {
			t.Fatal(err)
		}
		err = host(t, tc.tun, tc.caps).Check(cfg)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want one naming the missing setting", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
}

// This process's own capabilities are read from the real file.
func TestReadsTheRealStatusFile(t *testing.T) {
	if _, err := (Host{}).withDefaults().hasCap(21); err != nil {
		t.Fatal(err)
	}
}
