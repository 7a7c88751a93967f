package lab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

const modulePath = "github.com/flannelgo/flannel"

// Binaries says where the lab's programs are.
type Binaries struct {
	Flanneld  string // flanneld binary
	PluginDir string // directory holding the CNI plugin "flannel"
	CNIBinDir string // bridge, host-local, portmap
	Built     bool   // built from source into the state dir
	Source    string // module root they were built from
}

// FindBinaries looks for flanneld and the flannel CNI plugin, in order:
//
//  1. binDir, when the operator gave --bin-dir;
//  2. next to the running flannelctl (a release unpacks all three together,
//     and `go build -o DIR ./cmd/...` puts them there);
//  3. otherwise, when the working directory is inside this project's
//     source tree, `go build` into <state>/bin.
//
// The reference plugins come from cniBinDir (default /opt/cni/bin).
func FindBinaries(ctx context.Context, binDir, cniBinDir, stateDir string, say func(string, ...any)) (*Binaries, error) {
	if cniBinDir == "" {
		cniBinDir = testbed.DefaultCNIBinDir
	}
	b := &Binaries{CNIBinDir: cniBinDir}
	var dirs []string
	if binDir != "" {
		dirs = append(dirs, binDir)
	} else if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			dirs = append(dirs, filepath.Dir(exe))
		}
	}
	for _, d := range dirs {
		if isExec(filepath.Join(d, "flanneld")) && isExec(filepath.Join(d, "flannel")) {
			b.Flanneld, b.PluginDir = filepath.Join(d, "flanneld"), d
			return b, b.check()
		}
	}
	if binDir != "" {
		return nil, fmt.Errorf("--bin-dir %s must hold flanneld and flannel (build them: go build -o %s ./cmd/flanneld ./cmd/flannel)", binDir, binDir)
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, fmt.Errorf("no flanneld and flannel (CNI plugin) next to flannelctl, and %w; build all three into one directory: go build -o DIR ./cmd/flannelctl ./cmd/flanneld ./cmd/flannel", err)
	}
	out := filepath.Join(stateDir, "bin")
	say("building flanneld and the flannel CNI plugin from %s into %s (none next to flannelctl)", root, out)
	if err := goBuild(ctx, root, out); err != nil {
		return nil, err
	}
	b.Flanneld, b.PluginDir, b.Built, b.Source = filepath.Join(out, "flanneld"), out, true, root
	return b, b.check()
}

func (b *Binaries) check() error {
	pods := &testbed.CNIPods{PluginDir: b.PluginDir, BinDir: b.CNIBinDir}
	return pods.CheckBinaries()
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// moduleRoot finds this project's go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if declaresModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("the working directory is not inside the %s source tree", modulePath)
		}
		dir = parent
	}
}

func declaresModule(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

func goBuild(ctx context.Context, root, out string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
		if !isExec(gobin) {
			return fmt.Errorf("building flanneld needs the go tool, found neither in PATH nor at %s", gobin)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", out+string(os.PathSeparator), "./cmd/flanneld", "./cmd/flannel")
	cmd.Dir = root
	if data, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/flanneld ./cmd/flannel in %s: %w\n%s", root, err, data)
	}
	return nil
}
