// Package atomicfile replaces files so that a reader sees either the old
// content or the new one, never half a file: the data goes to a temporary
// file in the same directory, which is then renamed over the target.
// subnet.env (flanneld writes, the CNI plugin reads), the CNI plugin's
// per-container state, the wireguard private key and `flannelctl lab`'s
// state files use it.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to path with permission perm, atomically. The
// directory must exist (MkdirAll it first where it may not); a rename only
// replaces atomically within one file system, hence the temporary file
// next to the target.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPattern(filepath.Base(path)))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; Chmod is not subject to the umask.
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// maxTempBase bounds the part of the target's name that the temporary
// file's name repeats: a name may have 255 bytes (NAME_MAX) and CreateTemp
// adds up to 10 random digits, so ".<name>.<digits>" would not fit for a
// target name longer than 243 bytes (a long CNI container ID). The target
// itself is never renamed to this name, so a shortened one is harmless.
const maxTempBase = 200

// tempPattern is the CreateTemp pattern for a target named base: hidden,
// recognisably its own, and always a valid file name.
func tempPattern(base string) string {
	if len(base) > maxTempBase {
		base = base[:maxTempBase]
	}
	return "." + base + ".*"
}
