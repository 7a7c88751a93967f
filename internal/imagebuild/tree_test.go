package imagebuild

import (
	"archive/tar"
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCleanMergesUsr(t *testing.T) {
	for in, want := range map[string]string{
		"./bin/dash":                   "usr/bin/dash",
		"./lib64/ld-linux-x86-64.so.2": "usr/lib64/ld-linux-x86-64.so.2",
		"/sbin/ip":                     "usr/sbin/ip",
		"./usr/sbin/nft":               "usr/sbin/nft",
		"./etc/../bin":                 "usr/bin",
		"./binutils/x":                 "binutils/x",
		"./":                           "",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func reg(name, data string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(data))}
}

func TestAddKeepsSharedDirsAndRefusesClashingFiles(t *testing.T) {
	tr := newTree()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.add(&tar.Header{Typeflag: tar.TypeDir, Name: "./usr/", Mode: 0o755}, nil, "a"))
	must(tr.add(&tar.Header{Typeflag: tar.TypeDir, Name: "./usr/", Mode: 0o700}, nil, "b"))
	if tr.entries["usr"].mode != 0o755 {
		t.Error("a directory shipped twice took the second package's mode")
	}
	must(tr.add(reg("./bin/x", "same"), []byte("same"), "a"))
	must(tr.add(reg("./usr/bin/x", "same"), []byte("same"), "b"))
	err := tr.add(reg("./usr/bin/x", "other"), []byte("other"), "c")
	if err == nil || !strings.Contains(err.Error(), "/usr/bin/x is shipped by both a and c") {
		t.Errorf("a clashing file: %v", err)
	}
	must(tr.add(&tar.Header{Typeflag: tar.TypeLink, Name: "./usr/bin/y", Linkname: "./bin/x"}, nil, "a"))
	if e := tr.entries["usr/bin/y"]; e.typ != tar.TypeReg || string(e.data) != "same" {
		t.Errorf("a hard link became %+v, want a copy of its target", e)
	}
	must(tr.add(reg("./usr/share/doc/a/changelog.gz", "x"), []byte("x"), "a"))
	must(tr.add(reg("./usr/share/doc/a/copyright", "x"), []byte("x"), "a"))
	must(tr.add(reg("./usr/share/man/man8/x.8.gz", "x"), []byte("x"), "a"))
	if _, ok := tr.entries["usr/share/doc/a/changelog.gz"]; ok {
		t.Error("documentation kept")
	}
	if _, ok := tr.entries["usr/share/doc/a/copyright"]; !ok {
		t.Error("a copyright file dropped")
	}
	if _, ok := tr.entries["usr/share/man/man8/x.8.gz"]; ok {
		t.Error("a manual page kept")
	}
}

func TestLookupFollowsLinksInEveryComponent(t *testing.T) {
	tr := newTree()
	tr.entries["usr/lib/x86_64-linux-gnu/libc.so.6"] = &entry{typ: tar.TypeReg, data: []byte("libc")}
	tr.entries["usr/lib/x86_64-linux-gnu/libalias.so"] = &entry{typ: tar.TypeSymlink, link: "libc.so.6"}
	tr.entries["usr/lib64/ld.so"] = &entry{typ: tar.TypeSymlink, link: "/lib/x86_64-linux-gnu/libalias.so"}
	tr.entries["lib"] = &entry{typ: tar.TypeSymlink, link: "usr/lib"}
	tr.entries["loop"] = &entry{typ: tar.TypeSymlink, link: "/loop"}
	for _, p := range []string{"/usr/lib64/ld.so", "/lib64/ld.so", "/usr/lib/x86_64-linux-gnu/libalias.so"} {
		e, got, ok := tr.lookup(p)
		if !ok || e == nil || string(e.data) != "libc" || got != "usr/lib/x86_64-linux-gnu/libc.so.6" {
			t.Errorf("lookup(%q) = %v, %q, %v; want libc.so.6", p, e, got, ok)
		}
	}
	if _, _, ok := tr.lookup("/loop/x"); ok {
		t.Error("a link loop resolved")
	}
	if _, _, ok := tr.lookup("/usr/lib/missing"); ok {
		t.Error("a missing file resolved")
	}
}

// The linking check, on a real dynamically linked program of this host.
func TestCheckLinkingFindsMissingLibraries(t *testing.T) {
	prog, err := os.ReadFile("/usr/bin/true")
	if err != nil || !bytes.HasPrefix(prog, []byte("\x7fELF")) {
		t.Skipf("no ELF /usr/bin/true here: %v", err)
	}
	tr := newTree()
	tr.entries["usr/bin/true"] = &entry{typ: tar.TypeReg, data: prog}
	err = tr.checkLinking([]string{"/usr/lib/x86_64-linux-gnu", "/usr/lib"}, nil)
	if err == nil || !strings.Contains(err.Error(), "/usr/bin/true needs libc.so.6") || !strings.Contains(err.Error(), "loader") {
		t.Fatalf("checkLinking without libc: %v", err)
	}
	tr.entries["usr/lib/x86_64-linux-gnu/libc.so.6"] = &entry{typ: tar.TypeReg, data: []byte("not ELF")}
	tr.entries["usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"] = &entry{typ: tar.TypeReg}
	tr.entries["usr/lib64/ld-linux-x86-64.so.2"] = &entry{typ: tar.TypeSymlink, link: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"}
	tr.entries["lib"] = &entry{typ: tar.TypeSymlink, link: "usr/lib"}
	tr.entries["lib64"] = &entry{typ: tar.TypeSymlink, link: "usr/lib64"}
	if err := tr.checkLinking([]string{"/usr/lib/x86_64-linux-gnu", "/usr/lib"}, nil); err != nil {
		t.Errorf("checkLinking with libc and the loader: %v", err)
	}
}

// The same tree gives the same bytes (so the same image digest), with the
// directories before what they hold.
func TestWriteIsDeterministicAndOrdered(t *testing.T) {
	mtime := time.Unix(0, 0)
	build := func() []byte {
		tr := newTree()
		for _, p := range []string{"/usr/sbin/iptables-wrapper", "/opt/bin/flanneld", "/flannel", "/opt/bin/install-conf"} {
			tr.put(p, &entry{typ: tar.TypeReg, data: []byte(p), mode: 0o755, mtime: mtime})
		}
		tr.put("/usr/sbin/iptables", &entry{typ: tar.TypeSymlink, link: "iptables-wrapper", mode: 0o777, mtime: mtime})
		var buf bytes.Buffer
		if err := tr.write(&buf, mtime); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a, b := build(), build()
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of the same tree differ")
	}
	var names []string
	r := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := r.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	want := []string{"flannel", "opt/", "opt/bin/", "opt/bin/flanneld", "opt/bin/install-conf", "usr/", "usr/sbin/", "usr/sbin/iptables", "usr/sbin/iptables-wrapper"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("entries %q, want %q", names, want)
	}
}
