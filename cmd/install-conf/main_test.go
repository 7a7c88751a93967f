package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The target is replaced, not rewritten in place: a reader that opened the
// old file keeps reading the old content whole, and the directory holds no
// temporary file afterwards.
func TestInstallReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "cni-conf.json")
	dstDir := filepath.Join(dir, "net.d")
	dst := filepath.Join(dstDir, "10-flannel.conflist")
	if err := os.Mkdir(dstDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte(`{"name":"cbr0","new":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(`{"name":"cbr0","old":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	if err := install(src, dst); err != nil {
		t.Fatalf("install: %v", err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || string(got) != `{"name":"cbr0","new":true}` {
		t.Fatalf("%s holds %q (%v), want the source's content", dst, got, err)
	}
	st, err := os.Stat(dst)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("%s mode %v (%v), want the source's 0644", dst, st.Mode().Perm(), err)
	}
	buf := make([]byte, 64)
	n, _ := old.Read(buf)
	if string(buf[:n]) != `{"name":"cbr0","old":true}` {
		t.Errorf("a reader of the old file read %q: the file was rewritten in place", buf[:n])
	}
	ents, err := os.ReadDir(dstDir)
	if err != nil || len(ents) != 1 {
		t.Errorf("%s holds %d entries (%v), want only the conflist", dstDir, len(ents), err)
	}
}

func TestInstallRefusesMissingSourceAndDirectory(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "out")
	if err := install(filepath.Join(dir, "missing"), dst); err == nil {
		t.Error("install of a missing source succeeded")
	}
	if err := install(dir, dst); err == nil {
		t.Error("install of a directory succeeded")
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("a failed install left %s behind (%v)", dst, err)
	}
}
