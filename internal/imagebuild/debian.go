package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Package is a Debian package at the version apt chose.
type Package struct {
	Name, Version, Arch string
}

// File is the name `apt-get download` gives the package's .deb.
func (p Package) File() string {
	return p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Arch + ".deb"
}

func (p Package) String() string { return p.Name + "=" + p.Version }

// instLine is apt-get -s's line for a package it would unpack:
// "Inst libc6 (2.36-9+deb12u14 Debian:12.13/stable [amd64])".
var instLine = regexp.MustCompile(`^Inst (\S+) \((\S+) .*\[(\S+)\]\)`)

// Resolve asks apt which packages a system with nothing installed needs for
// want, without recommends: the dependency closure as apt itself resolves
// it (alternatives included), in apt's order, less the skip set.
func Resolve(ctx context.Context, want []string, skip map[string]string) ([]Package, error) {
	empty, err := os.CreateTemp("", "imagebuild-dpkg-status.")
	if err != nil {
		return nil, err
	}
	empty.Close()
	defer os.Remove(empty.Name())
	args := append([]string{"-s", "-q",
		"-o", "Dir::State::status=" + empty.Name(),
		"-o", "APT::Install-Recommends=false",
		"-o", "APT::Install-Suggests=false",
		"install"}, want...)
	out, err := exec.CommandContext(ctx, "apt-get", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("apt-get -s install %s: %w\n%s", strings.Join(want, " "), err, out)
	}
	var pkgs []Package
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := instLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if _, ok := skip[m[1]]; ok {
			continue
		}
		pkgs = append(pkgs, Package{Name: m[1], Version: m[2], Arch: m[3]})
	}
	for _, w := range want {
		if !slices.ContainsFunc(pkgs, func(p Package) bool { return p.Name == w }) {
			return nil, fmt.Errorf("apt-get -s install did not list %s among the packages to unpack:\n%s", w, out)
		}
	}
	return pkgs, nil
}

// Download fetches into dir (with `apt-get download`) the .debs that are
// not there yet.
func Download(ctx context.Context, dir string, pkgs []Package) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var missing []string
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(dir, p.File())); err != nil {
			missing = append(missing, p.String())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, missing...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w\n%s", strings.Join(missing, " "), err, out)
	}
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(dir, p.File())); err != nil {
			return fmt.Errorf("apt-get download %s left no %s in %s", p, p.File(), dir)
		}
	}
	return nil
}

// unpack adds the files of a .deb to t, as dpkg would unpack them (its
// maintainer scripts are not run).
func unpack(ctx context.Context, t *tree, deb, pkg string) error {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	r, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w", deb, err)
	}
	addErr := addTar(t, tar.NewReader(r), pkg)
	if addErr != nil {
		_, _ = io.Copy(io.Discard, r)
	}
	waitErr := cmd.Wait()
	if addErr != nil {
		return fmt.Errorf("%s: %w", deb, addErr)
	}
	if waitErr != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, waitErr, stderr.String())
	}
	return nil
}

func addTar(t *tree, tr *tar.Reader, pkg string) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var data []byte
		if h.Typeflag == tar.TypeReg {
			if data, err = io.ReadAll(tr); err != nil {
				return err
			}
		}
		if err := t.add(h, data, pkg); err != nil {
			return err
		}
	}
}
