//go:build kubernetes

package k8s

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// flannelctl is the binary the suite drives, built by TestMain.
var flannelctl string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "test/k8s needs root (it builds Kubernetes labs in network namespaces)")
			return 1
		}
		dir, err := os.MkdirTemp("", "k8s-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		out, err := exec.Command("go", "build", "-o", dir+"/", "../../cmd/flannelctl").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build flannelctl: %v\n%s", err, out)
			return 1
		}
		flannelctl = filepath.Join(dir, "flannelctl")
		return m.Run()
	}())
}
