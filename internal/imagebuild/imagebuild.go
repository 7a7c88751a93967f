// Package imagebuild assembles flannel's container image without Docker or
// a registry, as scripts/image.sh does: a root file system from Debian
// packages that apt downloads (unpacked as dpkg would, their maintainer
// scripts not run), flannel's programs and scripts in upstream flannel's
// layout on top, written as a docker-archive tarball that `ctr images
// import` and `docker load` both accept. The same inputs give the same
// image, byte for byte.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/flannelgo/flannel/internal/atomicfile"
)

// revision changes whenever the Debian layer would come out different from
// the same packages, so that a cached layer of an older builder is not
// reused.
const revision = "2"

// Options says what to build and where.
type Options struct {
	Recipe   Recipe // what the image holds: Flannel(), or a test image of recipes.go
	RepoDir  string // the repository root, for the recipe's Source files
	BinDir   string // the recipe's Binary files, built with CGO off
	CacheDir string // .debs and the Debian layer, kept between builds
	Out      string // the docker-archive tarball to write
	Tag      string // the image's name, e.g. ghcr.io/flannelgo/flannel:v0.1.0
	Arch     string // Debian's (and Go's) architecture name: amd64, arm64
	Version  string // flannel's version, for the image's label
	Created  time.Time
	// AptUpdate lets the build run `apt-get update` once when apt's lists
	// do not know a package or name a version no longer downloadable.
	AptUpdate bool
	Logf      func(format string, args ...any)
}

// triplet is Debian's multiarch directory name for arch ("" if unknown).
func triplet(arch string) string {
	switch arch {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	}
	return ""
}

// Build writes the image to o.Out.
func Build(ctx context.Context, o Options) error {
	if triplet(o.Arch) == "" {
		return fmt.Errorf("architecture %q: the builder knows amd64 and arm64", o.Arch)
	}
	ref, err := name.NewTag(o.Tag)
	if err != nil {
		return fmt.Errorf("image tag %q: %w", o.Tag, err)
	}
	deb, pkgs, err := debianLayer(ctx, o)
	if err != nil {
		return err
	}
	top, err := topLayer(o)
	if err != nil {
		return err
	}
	img, err := assemble(o, pkgs, deb, top)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return err
	}
	tmp := o.Out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", o.Out, err)
	}
	return os.Rename(tmp, o.Out)
}

// assemble stacks the Debian layer and, when the recipe adds files, the
// layer of those files (an image of packages alone, such as
// glibc-dns-testing, then shares every layer with one that adds files).
func assemble(o Options, pkgs []Package, deb, top v1.Layer) (v1.Image, error) {
	created := v1.Time{Time: o.Created}
	cfg := &v1.ConfigFile{
		Architecture: o.Arch,
		OS:           "linux",
		Created:      created,
		Config: v1.Config{
			Entrypoint: o.Recipe.Entrypoint,
			Cmd:        o.Recipe.Cmd,
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Labels: map[string]string{
				"org.opencontainers.image.title":   o.Recipe.Title,
				"org.opencontainers.image.version": o.Version,
				"org.opencontainers.image.source":  "https://github.com/flannelgo/flannel",
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = p.String()
	}
	layers := []mutate.Addendum{{Layer: deb, History: v1.History{Created: created,
		CreatedBy: "imagebuild: Debian " + strings.Join(names, " ")}}}
	if top != nil {
		layers = append(layers, mutate.Addendum{Layer: top, History: v1.History{Created: created,
			CreatedBy: "imagebuild: " + o.Recipe.Title + " " + o.Version}})
	}
	return mutate.Append(img, layers...)
}

// debianLayer returns the layer of Debian packages, from the cache when
// the same packages were unpacked before.
func debianLayer(ctx context.Context, o Options) (v1.Layer, []Package, error) {
	pkgs, err := fetchWithUpdate(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	key := sha256.New()
	fmt.Fprintln(key, revision, o.Arch)
	for _, p := range pkgs {
		fmt.Fprintln(key, p.String(), p.Arch)
	}
	cached := filepath.Join(o.CacheDir, "layers", "debian-"+hex.EncodeToString(key.Sum(nil))[:16]+".tar.gz")
	if _, err := os.Stat(cached); err == nil {
		o.Logf("Debian layer: %d packages, cached in %s", len(pkgs), cached)
		l, err := tarball.LayerFromFile(cached)
		return l, pkgs, err
	}
	o.Logf("Debian layer: unpacking %d packages", len(pkgs))
	t, err := debianTree(ctx, o, pkgs)
	if err != nil {
		return nil, nil, err
	}
	gz, err := gzipTree(t, debianTime())
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
		return nil, nil, err
	}
	if err := atomicfile.WriteFile(cached, gz, 0o644); err != nil {
		return nil, nil, err
	}
	l, err := tarball.LayerFromFile(cached)
	return l, pkgs, err
}

// debianTime dates what the builder adds to the Debian layer: the layer
// is cached by its packages alone, so nothing else may change its bytes.
func debianTime() time.Time { return time.Unix(0, 0).UTC() }

// debianTree unpacks pkgs, adds what their maintainer scripts would have
// made, and checks that every program finds its libraries.
func debianTree(ctx context.Context, o Options, pkgs []Package) (*tree, error) {
	t := newTree()
	for _, p := range pkgs {
		if err := unpack(ctx, t, filepath.Join(o.CacheDir, "debs", p.File()), p.Name); err != nil {
			return nil, err
		}
	}
	addSystemFiles(t, debianTime())
	status, err := dpkgStatus(ctx, o, pkgs)
	if err != nil {
		return nil, err
	}
	t.entries["var/lib/dpkg/status"] = &entry{typ: tar.TypeReg, data: status, mode: 0o644, mtime: debianTime(), from: "imagebuild"}
	if err := t.checkLinking([]string{"/usr/lib/" + triplet(o.Arch), "/usr/lib"}, o.Recipe.Unlinked); err != nil {
		return nil, err
	}
	return t, nil
}

// fetchWithUpdate resolves and downloads the packages, refreshing apt's
// lists once if they do not know a package or name a version the mirror
// no longer has.
func fetchWithUpdate(ctx context.Context, o Options) ([]Package, error) {
	pkgs, err := fetch(ctx, o)
	if err == nil || !o.AptUpdate {
		return pkgs, err
	}
	o.Logf("%v\nrefreshing apt's package lists (apt-get update) and trying again", err)
	if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-q").CombinedOutput(); uerr != nil {
		return nil, fmt.Errorf("apt-get update: %w\n%s", uerr, out)
	}
	return fetch(ctx, o)
}

func fetch(ctx context.Context, o Options) ([]Package, error) {
	pkgs, err := Resolve(ctx, o.Recipe.Packages, o.Recipe.Skipped)
	if err != nil {
		return nil, err
	}
	return pkgs, Download(ctx, filepath.Join(o.CacheDir, "debs"), pkgs)
}

// addSystemFiles does what the skipped maintainer scripts and Debian's
// base image would have done and a container needs: the merged-/usr links,
// root and nobody, the scratch directories, and the CA bundle
// (update-ca-certificates' output, every certificate the package ships).
func addSystemFiles(t *tree, mtime time.Time) {
	for _, d := range mergedDirs() {
		if _, ok := t.entries["usr/"+d]; ok {
			t.entries[d] = &entry{typ: tar.TypeSymlink, link: "usr/" + d, mode: 0o777, mtime: mtime, from: "usrmerge"}
		}
	}
	file := func(p, content string, mode int64) {
		t.entries[p] = &entry{typ: tar.TypeReg, data: []byte(content), mode: mode, mtime: mtime, from: "imagebuild"}
	}
	dir := func(p string, mode int64) {
		t.entries[p] = &entry{typ: tar.TypeDir, mode: mode, mtime: mtime, from: "imagebuild"}
	}
	file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0o644)
	file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
	dir("root", 0o700)
	dir("tmp", 0o1777)
	dir("var/tmp", 0o1777)
	dir("run", 0o755)
	dir("run/lock", 0o1777)
	// base-files' postinst moves these to /run.
	t.entries["var/run"] = &entry{typ: tar.TypeSymlink, link: "/run", mode: 0o777, mtime: mtime, from: "base-files"}
	t.entries["var/lock"] = &entry{typ: tar.TypeSymlink, link: "/run/lock", mode: 0o777, mtime: mtime, from: "base-files"}
	// libc-bin's postinst installs its default name-service order, without
	// which glibc asks DNS before /etc/hosts and never reads the file when
	// DNS answers "no such name" (the hosts kubelet writes into a pod).
	if e, ok := t.entries["usr/share/libc-bin/nsswitch.conf"]; ok {
		file("etc/nsswitch.conf", string(e.data), 0o644)
	}
	var bundle bytes.Buffer
	for _, p := range t.paths() {
		if strings.HasPrefix(p, "usr/share/ca-certificates/") && path.Ext(p) == ".crt" {
			bundle.Write(t.entries[p].data)
		}
	}
	if bundle.Len() > 0 {
		dir("etc/ssl/certs", 0o755)
		file("etc/ssl/certs/ca-certificates.crt", bundle.String(), 0o644)
	}
}

// topLayer holds the recipe's files and links (nil when it has none).
func topLayer(o Options) (v1.Layer, error) {
	r := o.Recipe
	if len(r.Files) == 0 && len(r.Links) == 0 && len(r.Dirs) == 0 {
		return nil, nil
	}
	t := newTree()
	for _, f := range r.Files {
		src := f.Host
		switch {
		case f.Binary != "":
			src = filepath.Join(o.BinDir, f.Binary)
		case f.Source != "":
			src = filepath.Join(o.RepoDir, f.Source)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("%s for the image's %s: %w", src, f.Path, err)
		}
		t.put(f.Path, &entry{typ: tar.TypeReg, data: data, mode: 0o755, mtime: o.Created, from: r.Title})
	}
	for _, l := range r.Links {
		t.put(l.Path, &entry{typ: tar.TypeSymlink, link: l.Target, mode: 0o777, mtime: o.Created, from: r.Title})
	}
	for _, d := range r.Dirs {
		t.put(d, &entry{typ: tar.TypeDir, mode: 0o755, mtime: o.Created, from: r.Title})
	}
	// The directories this layer names (opt, usr/sbin, ...) replace the
	// lower layer's; they are root's and 0755 in both.
	gz, err := gzipTree(t, o.Created)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	})
}

func gzipTree(t *tree, dirTime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := t.write(zw, dirTime); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Files lists the paths of the flannel image's regular files and links
// that come from flannel rather than from Debian, sorted: the list
// deploy/Dockerfile must produce too.
func Files() []string {
	r := Flannel()
	var ps []string
	for _, f := range r.Files {
		ps = append(ps, f.Path)
	}
	for _, l := range r.Links {
		ps = append(ps, l.Path)
	}
	slices.Sort(ps)
	return ps
}

// dpkgStatus is the dpkg database's status file for pkgs, so that dpkg-query
// and image scanners see what the image holds.
func dpkgStatus(ctx context.Context, o Options, pkgs []Package) ([]byte, error) {
	var b bytes.Buffer
	for _, p := range pkgs {
		deb := filepath.Join(o.CacheDir, "debs", p.File())
		out, err := exec.CommandContext(ctx, "dpkg-deb", "--field", deb).Output()
		if err != nil {
			return nil, fmt.Errorf("dpkg-deb --field %s: %w", deb, err)
		}
		for _, line := range strings.SplitAfter(strings.TrimRight(string(out), "\n")+"\n", "\n") {
			b.WriteString(line)
			if strings.HasPrefix(line, "Package: ") {
				b.WriteString("Status: install ok installed\n")
			}
		}
		b.WriteString("\n")
	}
	return b.Bytes(), nil
}
