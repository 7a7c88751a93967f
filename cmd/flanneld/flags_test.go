package main

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultsMatchUpstream(t *testing.T) {
	o, _, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.store.EtcdEndpoints != "http://127.0.0.1:4001,http://127.0.0.1:2379" || o.store.EtcdPrefix != "/coreos.com/network" ||
		o.subnetFile != "/run/flannel/subnet.env" || o.renewMargin() != 60*time.Minute || o.resync() != 5*time.Second ||
		!o.iptablesForwardRules || o.ipMasq || o.healthzPort != 0 || o.healthzIP != "0.0.0.0" ||
		o.store.NetConfigPath != "/etc/kube-flannel/net-conf.json" || o.store.KubeAnnotationPrefix != "flannel.alpha.coreos.com" {
		t.Fatalf("defaults differ from upstream: %+v", o)
	}
}

func TestEnvironmentFillsUnsetFlags(t *testing.T) {
	t.Setenv("FLANNELD_ETCD_PREFIX", "/from/env")
	t.Setenv("FLANNELD_IP_MASQ", "true")
	t.Setenv("FLANNELD_IFACE", "eth1")
	t.Setenv("FLANNELD_SUBNET_FILE", "/ignored/because/flag/wins")
	o, _, err := parseFlags([]string{"--subnet-file=/tmp/s.env", "--iface=eth9"})
	if err != nil {
		t.Fatal(err)
	}
	if o.store.EtcdPrefix != "/from/env" || !o.ipMasq || o.subnetFile != "/tmp/s.env" {
		t.Fatalf("env handling: %+v", o)
	}
	if got := o.iface.String(); got != "eth9" {
		t.Fatalf("--iface from the command line must win over FLANNELD_IFACE, got %q", got)
	}
}

func TestRepeatableIface(t *testing.T) {
	o, _, err := parseFlags([]string{"--iface=eth0", "--iface=198.51.100.2", "--iface-regex=^en", "--iface-regex=^eth"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.iface) != 2 || o.iface[1] != "198.51.100.2" || len(o.ifaceRegex) != 2 {
		t.Fatalf("repeatable flags: %+v %+v", o.iface, o.ifaceRegex)
	}
}

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--subnet-lease-renew-margin=0"}, "between 1 and 1439"},
		{[]string{"--subnet-lease-renew-margin=1440"}, "between 1 and 1439"},
		{[]string{"--iptables-resync=0"}, "at least 1 second"},
		{[]string{"--public-ip=fd00::1"}, "wrong address family"},
		{[]string{"--public-ip=nope"}, "not an IP address"},
		{[]string{"--public-ip=0.0.0.0"}, "--public-ip 0.0.0.0 is the unspecified address"},
		{[]string{"--public-ip=127.0.0.1"}, "--public-ip 127.0.0.1 is a loopback address"},
		{[]string{"--public-ip=224.0.0.1"}, "--public-ip 224.0.0.1 is a multicast address"},
		{[]string{"--public-ip=255.255.255.255"}, "--public-ip 255.255.255.255 is the broadcast address"},
		{[]string{"--public-ipv6=::"}, "--public-ipv6 :: is the unspecified address"},
		{[]string{"--public-ipv6=::1"}, "--public-ipv6 ::1 is a loopback address"},
		{[]string{"--public-ipv6=ff02::1"}, "--public-ipv6 ff02::1 is a multicast address"},
	} {
		o, _, err := parseFlags(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// As upstream (coreos/pkg flagutil): an invalid FLANNELD_* value is logged
// and skipped, the flag keeping its default; an empty one is skipped
// silently. Neither stops flanneld.
func TestBadEnvValueIsIgnored(t *testing.T) {
	t.Setenv("FLANNELD_IPTABLES_RESYNC", "soon")
	t.Setenv("FLANNELD_IP_MASQ", "")
	t.Setenv("FLANNELD_SUBNET_FILE", "")
	t.Setenv("FLANNELD_IPTABLES_FORWARD_RULES", "maybe")
	o, _, err := parseFlags(nil)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	if o.resync() != 5*time.Second || !o.iptablesForwardRules || o.ipMasq || o.subnetFile != "/run/flannel/subnet.env" {
		t.Errorf("bad or empty values changed flags: resync %s, forward rules %v, ip-masq %v, subnet-file %q", o.resync(), o.iptablesForwardRules, o.ipMasq, o.subnetFile)
	}
	if err := o.validate(); err != nil {
		t.Errorf("validate after ignored values: %v", err)
	}
	got := strings.Join(o.envIgnored, "\n")
	if len(o.envIgnored) != 2 || !strings.Contains(got, `FLANNELD_IPTABLES_RESYNC="soon"`) || !strings.Contains(got, `--iptables-resync keeps "5"`) ||
		!strings.Contains(got, "FLANNELD_IPTABLES_FORWARD_RULES") {
		t.Errorf("envIgnored = %q, want one line per invalid variable naming it and the value kept", o.envIgnored)
	}
}

func TestUnexpectedArgs(t *testing.T) {
	if _, _, err := parseFlags([]string{"extra"}); err == nil {
		t.Fatal("positional argument accepted")
	}
}

// --network-policy reads the Kubernetes API: refused with etcd, accepted
// in kube mode, and FLANNELD_NETWORK_POLICY sets it like any flag.
func TestNetworkPolicyFlag(t *testing.T) {
	o, _, err := parseFlags([]string{"--network-policy"})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "--network-policy needs --kube-subnet-mgr") {
		t.Errorf("etcd mode with --network-policy: %v, want a refusal naming --kube-subnet-mgr", err)
	}
	t.Setenv("FLANNELD_NETWORK_POLICY", "true")
	o, _, err = parseFlags([]string{"--kube-subnet-mgr"})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "--network-policy needs --ip-masq") {
		t.Errorf("--network-policy without --ip-masq: %v, want a refusal naming --ip-masq", err)
	}
	o, _, err = parseFlags([]string{"--kube-subnet-mgr", "--ip-masq"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.networkPolicy {
		t.Error("FLANNELD_NETWORK_POLICY=true did not set --network-policy")
	}
	if err := o.validate(); err != nil {
		t.Errorf("kube mode with --network-policy refused: %v", err)
	}
}

func TestPeerProbeInterval(t *testing.T) {
	o, _, err := parseFlags(nil)
	if err != nil || o.peerProbeInterval != 10*time.Second {
		t.Fatalf("default --peer-probe-interval %s (%v), want 10s", o.peerProbeInterval, err)
	}
	t.Setenv("FLANNELD_PEER_PROBE_INTERVAL", "0")
	if o, _, err = parseFlags(nil); err != nil || o.peerProbeInterval != 0 {
		t.Fatalf("FLANNELD_PEER_PROBE_INTERVAL=0 gave %s (%v), want off", o.peerProbeInterval, err)
	}
	if o, _, _ = parseFlags([]string{"--peer-probe-interval=-1s"}); o.validate() == nil {
		t.Error("--peer-probe-interval=-1s accepted")
	}
}
