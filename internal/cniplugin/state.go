package cniplugin

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/flannelgo/flannel/internal/atomicfile"
)

// The delegate config used for ADD is kept per container so that DEL and
// CHECK act on exactly what ADD set up, even after subnet.env changed
// (flanneld got another subnet) or vanished (flanneld is down).

func statePath(dataDir, containerID string) (string, error) {
	if containerID == "" || containerID == "." || containerID == ".." ||
		strings.ContainsAny(containerID, `/\`) {
		return "", fmt.Errorf("container ID %q cannot name a file in %s", containerID, dataDir)
	}
	return filepath.Join(dataDir, containerID), nil
}

// saveState writes atomically: a half-written file would make the
// container's DEL impossible.
func saveState(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}
