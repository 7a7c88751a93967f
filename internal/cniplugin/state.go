package cniplugin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/flannelgo/flannel/internal/atomicfile"
)

// The delegate config used for ADD is kept per container so that DEL and
// CHECK act on exactly what ADD set up, even after subnet.env changed
// (flanneld got another subnet) or vanished (flanneld is down).

// The state file is named by the container ID, as upstream names it, so a
// node that switches plugins keeps its pods' state. The CNI spec sets no
// length limit on IDs but a file name has one (NAME_MAX, 255 bytes): a
// longer ID keeps its first bytes and gets its SHA-256 after a '+', a
// character valid IDs never contain, so it can never name another
// container's file.
const maxStateName = 255

func statePath(dataDir, containerID string) (string, error) {
	if containerID == "" || containerID == "." || containerID == ".." ||
		strings.ContainsAny(containerID, `/\`) {
		return "", fmt.Errorf("container ID %q cannot name a file in %s", containerID, dataDir)
	}
	name := containerID
	if len(name) > maxStateName {
		sum := sha256.Sum256([]byte(containerID))
		digest := hex.EncodeToString(sum[:])
		name = containerID[:maxStateName-1-len(digest)] + "+" + digest
	}
	return filepath.Join(dataDir, name), nil
}

// saveState writes atomically: a half-written file would make the
// container's DEL impossible.
func saveState(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}
