package wireguard

import (
	"errors"
	"fmt"
	"io"
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
	if msg := keyDirProblem(filepath.Dir(path)); msg != "" {
		klog.Warningf("wireguard: %s", msg)
	}
	data, err := readKeyFile(path)
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

// readKeyFile reads the key file and, when its group or others may use it,
// forces it back to 0600 with a warning: whoever reads the key can decrypt
// this node's traffic and impersonate it. The mode is checked and changed
// on the open file, so a file swapped in between cannot escape. Upstream's
// 0400 is left as it is.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (mode %s): remove it so that flanneld writes a new key", path, st.Mode())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("private key %s has mode %04o, open to other users, and setting 0600 failed: %w", path, perm, err)
		}
		klog.Warningf("wireguard: private key %s had mode %04o, open to other users; set it to 0600. "+
			"If someone may have read it, remove the file and restart flanneld: it makes a new key and publishes it to the peers", path, perm)
	}
	return io.ReadAll(f)
}

// keyDirProblem says why the key's directory is unsafe, or "": a directory
// other users may write to (without the sticky bit) lets them replace the
// key with one they know. It is reported, not changed: the directory is
// shared with other files (subnet.env) and may not be flanneld's.
func keyDirProblem(dir string) string {
	st, err := os.Stat(dir)
	if err != nil {
		return "" // created 0755 with the key, or the read fails below
	}
	mode := st.Mode()
	if mode.Perm()&0o022 == 0 || mode&os.ModeSticky != 0 {
		return ""
	}
	return fmt.Sprintf("directory %s of the private key has mode %04o: other users can replace the key with one they know; "+
		"make it writable by its owner only (chmod go-w %s) or point $WIREGUARD_KEY_FILE elsewhere", dir, mode.Perm(), dir)
}
