package cniplugin

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
