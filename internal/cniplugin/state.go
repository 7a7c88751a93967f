package cniplugin

import (
	"os"
	"path/filepath"

	"github.com/flannelgo/flannel/internal/atomicfile"
	"github.com/flannelgo/flannel/internal/containerid"
)

// The delegate config used for ADD is kept per container so that DEL and
// CHECK act on exactly what ADD set up, even after subnet.env changed
// (flanneld got another subnet) or vanished (flanneld is down).

// statePath names the state file after the container ID, as upstream
// does, so a node that switches plugins keeps its pods' state; IDs longer
// than a file name get a shortened, hashed name (see containerid).
func statePath(dataDir, containerID string) (string, error) {
	name, err := containerid.FileName(dataDir, containerID)
	if err != nil {
		return "", err
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
