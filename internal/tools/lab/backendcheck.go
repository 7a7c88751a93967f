package lab

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Backends are the backends a lab can run: those whose net-conf needs no
// more than the type (ipsec needs a PSK, extension its commands, aws-vpc
// an EC2 instance).
var Backends = []string{"vxlan", "host-gw", "udp", "wireguard", "ipip"}

// ErrUnknownBackend is a --backend the lab does not run.
var ErrUnknownBackend = errors.New("unknown backend")

// CheckBackend refuses, before anything is built, a backend the lab does
// not run or this kernel cannot: otherwise it shows only once every
// node's flanneld has failed.
func CheckBackend(backend string) error {
	if !slices.Contains(Backends, backend) {
		return fmt.Errorf("--backend %q: %w; the lab runs %v", backend, ErrUnknownBackend, Backends)
	}
	switch backend {
	case "ipip":
		err := probeLink(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: "flprobe0"}})
		if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP) {
			return fmt.Errorf("--backend ipip: this kernel lacks ipip support (creating an ipip device: %v): load the module with `modprobe ipip` (kernel option CONFIG_NET_IPIP), or choose another backend such as vxlan", err)
		}
		if err != nil {
			return fmt.Errorf("--backend ipip: cannot tell whether this kernel has ipip (creating a test device: %w)", err)
		}
	case "udp":
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			return fmt.Errorf("--backend udp needs the TUN device: %w (modprobe tun)", err)
		}
	}
	return nil
}

// probeLink creates link in a network namespace of its own that nobody
// else sees and that vanishes with the thread: the thread is locked and
// never unlocked, so the Go runtime ends it when the goroutine returns.
func probeLink(link netlink.Link) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare the network namespace (run as root): %w", err)
			return
		}
		errc <- netlink.LinkAdd(link)
	}()
	return <-errc
}
