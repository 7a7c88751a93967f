package imagebuild

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"
)

// tree is a root file system being assembled in memory, keyed by path
// without the leading slash ("usr/bin/dash").
type tree struct {
	entries map[string]*entry
}

type entry struct {
	typ      byte // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	mode     int64
	uid, gid int
	mtime    time.Time
	link     string // symlink target
	data     []byte
	from     string // the package (or "flannel") that put it there
}

func newTree() *tree { return &tree{entries: map[string]*entry{}} }

// mergedDirs are the top-level directories that Debian's merged-/usr
// layout makes links into /usr.
func mergedDirs() []string { return []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} }

// clean turns a path from a package ("./bin/dash", "/lib/x") into the
// tree's key in the merged-/usr layout ("usr/bin/dash", "usr/lib/x").
func clean(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	top, _, _ := strings.Cut(p, "/")
	if slices.Contains(mergedDirs(), top) {
		p = "usr/" + p
	}
	return p
}

// dropped are paths nothing in a container reads: documentation (except
// the copyright files), manuals, translations.
func dropped(p string, typ byte) bool {
	for _, d := range []string{"usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian", "usr/share/bug"} {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return strings.HasPrefix(p, "usr/share/doc/") && typ != tar.TypeDir && path.Base(p) != "copyright"
}

// add puts one tar entry from pkg into the tree. A directory two packages
// ship is kept once; a file two packages ship must be the same.
func (t *tree) add(h *tar.Header, data []byte, pkg string) error {
	p := clean(h.Name)
	if p == "" || dropped(p, h.Typeflag) {
		return nil
	}
	e := &entry{typ: h.Typeflag, mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, mtime: h.ModTime, data: data, from: pkg}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink:
		e.link = h.Linkname
	case tar.TypeLink:
		// A hard link becomes a copy: the layer then needs no ordering
		// between a link and its target.
		target, ok := t.entries[clean(h.Linkname)]
		if !ok || target.typ != tar.TypeReg {
			return fmt.Errorf("%s: hard link %s to %s, which is not a file unpacked before it", pkg, h.Name, h.Linkname)
		}
		e.typ, e.data = tar.TypeReg, target.data
	default:
		return fmt.Errorf("%s: %s has tar type %q, which the image does not carry", pkg, h.Name, h.Typeflag)
	}
	old, ok := t.entries[p]
	switch {
	case !ok:
		t.entries[p] = e
	case old.typ == tar.TypeDir && e.typ == tar.TypeDir:
	case old.typ == e.typ && bytes.Equal(old.data, e.data) && old.link == e.link:
	default:
		return fmt.Errorf("/%s is shipped by both %s and %s, differently", p, old.from, pkg)
	}
	return nil
}

// put adds or replaces a file flannel's builder makes.
func (t *tree) put(p string, e *entry) { t.entries[clean(p)] = e }

// lookup follows symbolic links (in every component, as the kernel does)
// and returns the entry p ends at, and its resolved path.
func (t *tree) lookup(p string) (*entry, string, bool) {
	parts := strings.Split(clean(p), "/")
	for hops := 0; hops < 40; hops++ {
		restarted := false
		for i := range parts {
			cur := strings.Join(parts[:i+1], "/")
			e, ok := t.entries[cur]
			if !ok && i == len(parts)-1 {
				return nil, "", false
			}
			if !ok || e.typ != tar.TypeSymlink {
				continue // a directory (written out later if no package names it)
			}
			target := e.link
			if !strings.HasPrefix(target, "/") {
				target = path.Join(path.Dir("/"+cur), target)
			}
			parts = append(strings.Split(clean(target), "/"), parts[i+1:]...)
			restarted = true
			break
		}
		if !restarted {
			p := strings.Join(parts, "/")
			return t.entries[p], p, true
		}
	}
	return nil, "", false
}

// checkLinking fails if a program or library in the tree needs a shared
// library (or a dynamic loader) the tree does not hold, other than those
// in unlinked: the proof that Skipped skipped nothing a program uses.
// libDirs are the loader's default directories.
func (t *tree) checkLinking(libDirs []string, unlinked map[string]string) error {
	var problems []string
	for _, p := range t.paths() {
		e := t.entries[p]
		if e.typ != tar.TypeReg || !bytes.HasPrefix(e.data, []byte("\x7fELF")) {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(e.data))
		if err != nil {
			continue // not an ELF file after all
		}
		problems = append(problems, t.missingLibs(p, f, libDirs, unlinked)...)
		f.Close()
	}
	if len(problems) > 0 {
		return fmt.Errorf("the image would not run everything it holds (drop the providing package from Skipped):\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

func (t *tree) missingLibs(p string, f *elf.File, libDirs []string, unlinked map[string]string) []string {
	var problems []string
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			return []string{fmt.Sprintf("/%s: read its loader: %v", p, err)}
		}
		interp := string(bytes.TrimRight(b, "\x00"))
		if e, _, ok := t.lookup(interp); !ok || e == nil || e.typ != tar.TypeReg {
			problems = append(problems, fmt.Sprintf("/%s: loader %s is missing", p, interp))
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil || len(needed) == 0 {
		return problems
	}
	var dirs []string
	for _, tag := range []elf.DynTag{elf.DT_RPATH, elf.DT_RUNPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				dirs = append(dirs, strings.ReplaceAll(d, "$ORIGIN", path.Dir("/"+p)))
			}
		}
	}
	dirs = append(dirs, libDirs...)
	for _, lib := range needed {
		found := slices.ContainsFunc(dirs, func(d string) bool {
			e, _, ok := t.lookup(path.Join(d, lib))
			return ok && e != nil && e.typ == tar.TypeReg
		})
		if _, ok := unlinked[lib]; !found && !ok {
			problems = append(problems, fmt.Sprintf("/%s needs %s", p, lib))
		}
	}
	return problems
}

func (t *tree) paths() []string {
	ps := make([]string, 0, len(t.entries))
	for p := range t.entries {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// write writes the tree as a tar stream in path order (a directory before
// what it holds), with any missing parent directory added, so that the
// same tree always gives the same bytes.
func (t *tree) write(w io.Writer, dirTime time.Time) error {
	for _, p := range t.paths() {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := t.entries[d]; !ok {
				t.entries[d] = &entry{typ: tar.TypeDir, mode: 0o755, mtime: dirTime, from: "parent"}
			}
		}
	}
	tw := tar.NewWriter(w)
	for _, p := range t.paths() {
		e := t.entries[p]
		h := &tar.Header{
			Typeflag: e.typ, Name: p, Linkname: e.link, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, ModTime: e.mtime,
		}
		if e.typ == tar.TypeDir {
			h.Name += "/"
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("/%s: %w", p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("/%s: %w", p, err)
		}
	}
	return tw.Close()
}
