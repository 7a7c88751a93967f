package wireguard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/atomicfile"
)

// DefaultKeyFile is where the private key lives unless $WIREGUARD_KEY_FILE
// says otherwise, as upstream.
const DefaultKeyFile = "/run/flannel/wgkey"

// KeyFile is the private key's path from the environment.
func KeyFile() string {
	if p, ok := os.LookupEnv("WIREGUARD_KEY_FILE"); ok && p != "" {
		return p
	}
	return DefaultKeyFile
}

// loadOrCreateKey reads the node's private key, or makes one and writes it
// (mode 0600) so that a restart keeps the public key its peers know.
func loadOrCreateKey(path string) (wgtypes.Key, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, perr := wgtypes.ParseKey(strings.TrimSpace(string(data)))
		if perr != nil {
			return k, fmt.Errorf("private key in %s: %w (remove the file to get a new key; peers learn it from the lease)", path, perr)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, fmt.Errorf("read private key %s: %w", path, err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return k, fmt.Errorf("generate private key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return k, fmt.Errorf("create directory for %s: %w", path, err)
	}
	// Atomically: a crash never leaves a half-written key that the next
	// start would refuse.
	if err := atomicfile.WriteFile(path, []byte(k.String()+"\n"), 0o600); err != nil {
		return k, fmt.Errorf("private key: %w", err)
	}
	klog.Infof("wireguard: generated a private key in %s", path)
	return k, nil
}
