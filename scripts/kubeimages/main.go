// Command kubeimages assembles the container images the Kubernetes lab
// needs (pause, agnhost, CoreDNS) from binaries built on this machine,
// because no registry can be reached: each image is one layer of the given
// files, written as a docker-archive that `ctr images import` accepts.
//
// Usage:
//
//	kubeimages -o OUT.tar -tag REF [-entrypoint /bin] [-cmd CMD] [-file DEST=SRC]... [-link DEST=TARGET]...
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// pairs is a repeatable DEST=SRC flag.
type pairs map[string]string

func (p pairs) String() string { return fmt.Sprint(map[string]string(p)) }

func (p pairs) Set(v string) error {
	dst, src, ok := strings.Cut(v, "=")
	if !ok || !strings.HasPrefix(dst, "/") || src == "" {
		return fmt.Errorf("%q: want /DEST=SOURCE", v)
	}
	p[dst] = src
	return nil
}

func main() {
	files, links := pairs{}, pairs{}
	out := flag.String("o", "", "docker-archive to write")
	tag := flag.String("tag", "", "image reference, e.g. registry.k8s.io/pause:3.10.2")
	entry := flag.String("entrypoint", "", "entrypoint, words separated by spaces")
	cmd := flag.String("cmd", "", "default command (Dockerfile CMD), words separated by spaces")
	flag.Var(files, "file", "DEST=SRC: copy file SRC (mode kept) to DEST in the image; repeatable")
	flag.Var(links, "link", "DEST=TARGET: symlink in the image; repeatable")
	flag.Parse()
	if *out == "" || *tag == "" || len(files) == 0 {
		fmt.Fprintln(os.Stderr, "kubeimages: -o, -tag and at least one -file are required")
		os.Exit(2)
	}
	if err := build(*out, *tag, *entry, *cmd, files, links); err != nil {
		fmt.Fprintf(os.Stderr, "kubeimages: %s: %v\n", *tag, err)
		os.Exit(1)
	}
}

func build(out, tag, entry, cmd string, files, links pairs) error {
	ref, err := name.ParseReference(tag)
	if err != nil {
		return err
	}
	layerTar, err := layerBytes(files, links)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Entrypoint = strings.Fields(entry)
	cfg.Config.Cmd = strings.Fields(cmd)
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// layerBytes is one tar layer holding files and links, with the parent
// directories each needs, in a stable order.
func layerBytes(files, links pairs) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var names []string
	for d := range files {
		names = append(names, d)
	}
	for d := range links {
		names = append(names, d)
	}
	sort.Strings(names)
	epoch := time.Unix(0, 0)
	for _, dst := range names {
		if err := addDirs(tw, dirs, path.Dir(dst), epoch); err != nil {
			return nil, err
		}
		if target, ok := links[dst]; ok {
			h := &tar.Header{Typeflag: tar.TypeSymlink, Name: dst[1:], Linkname: target, Mode: 0o777, ModTime: epoch}
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			continue
		}
		if err := addFile(tw, dst, files[dst], epoch); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addDirs(tw *tar.Writer, seen map[string]bool, dir string, mt time.Time) error {
	if dir == "/" || seen[dir] {
		return nil
	}
	if err := addDirs(tw, seen, path.Dir(dir), mt); err != nil {
		return err
	}
	seen[dir] = true
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir[1:] + "/", Mode: 0o755, ModTime: mt})
}

func addFile(tw *tar.Writer, dst, src string, mt time.Time) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	h := &tar.Header{Typeflag: tar.TypeReg, Name: dst[1:], Mode: int64(fi.Mode().Perm()), Size: int64(len(data)), ModTime: mt}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = tw.Write(data)
	return err
}
