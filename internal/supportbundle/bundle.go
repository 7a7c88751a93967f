// Package supportbundle writes the archive of `flannelctl doctor --bundle`:
// what a maintainer needs to diagnose a node without a shell on it (logs,
// firewall rules, routes, neighbours, FDB, subnet.env, leases, doctor's
// verdict), as one gzip'd tar, with every secret (PSKs, keys, tokens,
// passwords) redacted before it is written.
package supportbundle

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"time"
)

// Item is one file of the archive.
type Item struct {
	Name string
	Data []byte
}

// Runner runs a command and returns its combined output.
type Runner func(ctx context.Context, argv ...string) ([]byte, error)

// Exec runs argv on this machine, in the caller's namespaces.
func Exec(ctx context.Context, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
}

// Command is one kernel or firewall listing of the bundle.
type Command struct {
	File string
	Argv []string
}

// Commands are the listings every bundle holds: devices, addresses,
// routes, neighbours, FDB, both firewalls, WireGuard peers.
var Commands = []Command{
	{"kernel/links.txt", []string{"ip", "-d", "link", "show"}},
	{"kernel/addresses.txt", []string{"ip", "addr", "show"}},
	{"kernel/routes-ipv4.txt", []string{"ip", "-4", "route", "show", "table", "all"}},
	{"kernel/routes-ipv6.txt", []string{"ip", "-6", "route", "show", "table", "all"}},
	{"kernel/neighbours.txt", []string{"ip", "neigh", "show"}},
	{"kernel/fdb.txt", []string{"bridge", "fdb", "show"}},
	{"rules/iptables-save.txt", []string{"iptables-save"}},
	{"rules/ip6tables-save.txt", []string{"ip6tables-save"}},
	{"rules/nft-ruleset.txt", []string{"nft", "list", "ruleset"}},
	{"kernel/wireguard.txt", []string{"wg", "show", "all"}},
	{"kernel/uname.txt", []string{"uname", "-a"}},
}

// RunCommands runs each listing; a failed one leaves its error in the
// archive (a missing tool is a fact too).
func RunCommands(ctx context.Context, run Runner, cmds []Command) []Item {
	items := make([]Item, 0, len(cmds))
	for _, c := range cmds {
		out, err := run(ctx, c.Argv...)
		if err != nil {
			out = append(out, []byte(fmt.Sprintf("\n%v: %v\n", c.Argv, err))...)
		}
		items = append(items, Item{Name: c.File, Data: out})
	}
	return items
}

// File reads a file of the node into the archive under name, or its error.
func File(name, path string) Item {
	data, err := os.ReadFile(path)
	if err != nil {
		return Item{Name: name + ".error", Data: []byte(err.Error() + "\n")}
	}
	return Item{Name: name, Data: data}
}

// Write writes items, each redacted, as a gzip'd tar under a directory
// named after the bundle (so unpacking it makes one directory).
func Write(w io.Writer, dir string, items []Item, now time.Time) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, it := range items {
		data := Redact(it.Data)
		hdr := &tar.Header{Name: path.Join(dir, it.Name), Mode: 0o600, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("support bundle: %s: %w", it.Name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("support bundle: %s: %w", it.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("support bundle: %w", err)
	}
	return gz.Close()
}

// Read returns the files of an archive Write wrote, by name: what a
// maintainer (or a test) sees after unpacking it.
func Read(r io.Reader) (map[string]string, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("support bundle: %w", err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("support bundle: %w", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("support bundle: %s: %w", h.Name, err)
		}
		files[h.Name] = string(data)
	}
}
