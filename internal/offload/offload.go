// Package offload handles the VXLAN checksum-offload bug: on Linux before
// 5.7, VXLAN packets whose inner checksum was left to the hardware
// (tx-checksum-ip-generic) leave some NICs and NAT paths with a corrupt
// checksum, and pods on other nodes see their connections hang. flanneld
// turns the feature off on its VXLAN device there (or when
// Backend.DisableTxChecksumOffload is set); `flannelctl doctor` checks it.
// It uses the ethtool ioctl (no ethtool binary) in the caller's namespace.
package offload

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"
)

// Feature is the ethtool feature name of the checksum offload in question.
const Feature = "tx-checksum-ip-generic"

// KernelNeedsFix reports whether the running kernel is older than 5.7,
// where the bug was fixed, and returns its release string.
func KernelNeedsFix() (bool, string) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false, "unknown"
	}
	rel := unix.ByteSliceToString(u.Release[:])
	return before(rel, 5, 7), rel
}

// before reports whether release (like "5.4.0-150-generic") is older than
// major.minor.
func before(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	minStr := strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	mnr, err2 := strconv.Atoi(minStr)
	if err1 != nil || err2 != nil {
		return false
	}
	return maj < major || (maj == major && mnr < minor)
}

// TxChecksumOn reports whether tx-checksum-ip-generic is on for dev.
func TxChecksumOn(dev string) (bool, error) {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return false, fmt.Errorf("ethtool socket: %w", err)
	}
	defer e.Close()
	feats, err := e.Features(dev)
	if err != nil {
		return false, fmt.Errorf("read offload features of %s: %w", dev, err)
	}
	on, known := feats[Feature]
	if !known {
		return false, fmt.Errorf("%s has no %s feature", dev, Feature)
	}
	return on, nil
}

// DisableTxChecksum turns tx-checksum-ip-generic off on dev (as `ethtool
// -K dev tx-checksum-ip-generic off`).
func DisableTxChecksum(dev string) error { return SetTxChecksum(dev, false) }

// SetTxChecksum switches tx-checksum-ip-generic on dev.
func SetTxChecksum(dev string, on bool) error {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer e.Close()
	if err := e.Change(dev, map[string]bool{Feature: on}); err != nil {
		return fmt.Errorf("set %s=%v on %s: %w", Feature, on, dev, err)
	}
	return nil
}
