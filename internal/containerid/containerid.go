// Package containerid names per-container files after a CNI container ID:
// the CNI plugin's saved delegate config and the anti-spoofing pod record
// both live in a file of that name, as upstream names its state files.
package containerid

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// maxName is NAME_MAX on Linux file systems.
const maxName = 255

// FileName is the file name for containerID. The CNI spec sets no length
// limit on IDs but a file name has one: an ID longer than 255 bytes keeps
// its first bytes and gets its SHA-256 after a '+', a character valid IDs
// never contain, so the name can never be another container's. An ID that
// cannot name a file (empty, ".", "..", a slash) is an error naming dir.
func FileName(dir, containerID string) (string, error) {
	if containerID == "" || containerID == "." || containerID == ".." ||
		strings.ContainsAny(containerID, `/\`) {
		return "", fmt.Errorf("container ID %q cannot name a file in %s", containerID, dir)
	}
	if len(containerID) <= maxName {
		return containerID, nil
	}
	sum := sha256.Sum256([]byte(containerID))
	digest := hex.EncodeToString(sum[:])
	return containerID[:maxName-1-len(digest)] + "+" + digest, nil
}
