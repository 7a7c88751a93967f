package ipsec

import (
	"net"

	"github.com/vishvananda/netlink"
)

// kernelHasESP adds and removes a throw-away ESP state with upstream's
// default algorithm: a kernel without esp4 or AES-GCM refuses it.
func kernelHasESP() bool {
	st := &netlink.XfrmState{
		Src: net.ParseIP("127.0.0.1"), Dst: net.ParseIP("127.0.0.2"),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Spi: 0x0f1a0e51,
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: make([]byte, 20), ICVLen: 128},
	}
	if err := netlink.XfrmStateAdd(st); err != nil {
		return false
	}
	_ = netlink.XfrmStateDel(st)
	return true
}
