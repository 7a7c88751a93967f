package ipsec

import (
	"strings"
	"testing"
)

func TestOptions(t *testing.T) {
	long := strings.Repeat("k", minPSKLength)
	o, err := parseOptions([]byte(`{"PSK":"` + long + `"}`))
	if err != nil || o.ESPProposal != DefaultESPProposal || o.UDPEncap {
		t.Errorf("defaults: %+v %v", o, err)
	}
	_, err = parseOptions([]byte(`{"PSK":"` + long[1:] + `"}`))
	if err == nil || !strings.Contains(err.Error(), "PSK is 95 characters long; it must have at least 96") {
		t.Errorf("short PSK: %v", err)
	}
	o, err = parseOptions([]byte(`{"PSK":"` + long + `","UDPEncap":true,"ESPProposal":"aes256gcm16-modp2048"}`))
	if err != nil || !o.UDPEncap || o.ESPProposal != "aes256gcm16-modp2048" {
		t.Errorf("keys: %+v %v", o, err)
	}
}

func TestCharonConf(t *testing.T) {
	conf := charonConf("/x", true)
	for _, want := range []string{"path = /x/charon.log", "include /etc/strongswan.d/charon/*.conf", "kernel-libipsec {\n      load = yes"} {
		if !strings.Contains(conf, want) {
			t.Errorf("userspace conf lacks %q:\n%s", want, conf)
		}
	}
	if !strings.Contains(charonConf("/x", false), "load = no") {
		t.Errorf("kernel conf loads kernel-libipsec")
	}
}
