package lab

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/harness/testbed"
)

func TestSpecValidate(t *testing.T) {
	s := Spec{Nodes: 3}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Name != "lab" || s.Backend != "vxlan" || s.Segments != 1 || s.UnderlayMTU != 1500 || s.PodMTU != 0 {
		t.Errorf("defaults: %+v", s)
	}
	if got := s.NetConf(); got != `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}` {
		t.Errorf("net-conf %s", got)
	}
	for _, bad := range []Spec{
		{Name: "Lab-1", Nodes: 1},
		{Name: "toolongname", Nodes: 1},
		{Nodes: 0},
		{Nodes: 101},
		{Nodes: 2, Segments: 3},
		{Nodes: 2, UnderlayMTU: 1000},
		{Nodes: 2, PodMTU: 100},
		{Nodes: 2, PodsPerNode: -1},
		{Nodes: 2, Backend: "udp", Datapath: "ebpf"},
		{Nodes: 2, Datapath: "xdp"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	eb := Spec{Nodes: 2, Backend: "host-gw", Datapath: "ebpf", Kube: &KubeSpec{}}
	if err := eb.Validate(); err != nil || eb.NetConf() != `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","Datapath":"ebpf"}}` || !eb.Kube.EBPF {
		t.Errorf("--datapath ebpf: %v, net-conf %s, kube %+v", err, eb.NetConf(), eb.Kube)
	}
	hg := Spec{Nodes: 2, Backend: "Host-GW"}
	if err := hg.Validate(); err != nil || !strings.Contains(hg.NetConf(), `"Type":"host-gw"`) {
		t.Errorf("host-gw spec: %v %s", err, hg.NetConf())
	}
}

func TestParsePodMTU(t *testing.T) {
	for in, want := range map[string]int{"": 0, "auto": 0, "1500": 1500} {
		if got, err := ParsePodMTU(in); err != nil || got != want {
			t.Errorf("ParsePodMTU(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := ParsePodMTU("big"); err == nil {
		t.Error("ParsePodMTU accepted a word")
	}
}

func TestJudge(t *testing.T) {
	cases := []struct {
		name                       string
		podMTU, flannelMTU, larges int
		cross, ok                  bool
		inWhy                      string
	}{
		{"healthy", 1450, 1450, 1422, true, true, ""},
		{"war story", 1500, 1450, 1422, true, false, "the pod MTU (1500) exceeds the overlay MTU (1450"},
		{"same node at 1500", 1500, 1450, 1472, false, true, ""},
		{"small pod MTU", 1400, 1450, 1372, true, true, ""},
		{"path smaller than promised", 1450, 1450, 1372, true, false, "promises 1422"},
		{"bridge loses packets", 1450, 1450, 1000, false, false, "same bridge"},
	}
	for _, c := range cases {
		r := &mtuResult{podMTU: c.podMTU, flannelMTU: c.flannelMTU, largest: c.larges,
			promised: c.flannelMTU - ipICMPOverhead, sendable: c.podMTU - ipICMPOverhead}
		ok, short, why := judge(r, c.cross)
		if ok != c.ok || !strings.Contains(why, c.inWhy) || short == "" {
			t.Errorf("%s: judge = %v %q %q", c.name, ok, short, why)
		}
		if !ok && !strings.Contains(why, "above "+strconv.Itoa(c.larges)+" bytes vanish") {
			t.Errorf("%s: reason does not name the boundary: %q", c.name, why)
		}
	}
}

func TestGroupFailures(t *testing.T) {
	fs := []failure{
		{"MTU a -> b", "too big"}, {"ping x", "lost"}, {"MTU b -> a", "too big"},
		{"MTU a -> c", "too big"}, {"MTU c -> a", "too big"}, {"MTU c -> b", "too big"},
	}
	got := groupFailures(fs)
	if len(got) != 2 || got[0].why != "too big" || got[1].what != "ping x" {
		t.Fatalf("groups %+v", got)
	}
	if got[0].what != "MTU a -> b, MTU b -> a, MTU a -> c and 2 more" {
		t.Errorf("grouped what %q", got[0].what)
	}
}

func TestResolve(t *testing.T) {
	root := t.TempDir()
	resolve := func(name string) string {
		t.Helper()
		got, err := Resolve(root, name)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", name, err)
		}
		return got
	}
	addLab := func(name string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeJSON(specPath(filepath.Join(root, name)), &Spec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if got := resolve(""); got != "lab" {
		t.Errorf("no labs: %q", got)
	}
	addLab("x1")
	if got := resolve(""); got != "x1" {
		t.Errorf("one lab: %q", got)
	}
	if got := resolve("other"); got != "other" {
		t.Errorf("explicit name: %q", got)
	}
	addLab("x2")
	if _, err := Resolve(root, ""); err == nil || !strings.Contains(err.Error(), "x1, x2") {
		t.Errorf("two labs without --name: %v", err)
	}
	addLab("lab")
	if got := resolve(""); got != "lab" {
		t.Errorf("the default among several: %q", got)
	}
	if _, err := ReadSpec(filepath.Join(root, "none")); err == nil || !strings.Contains(err.Error(), "lab up --name none") {
		t.Errorf("ReadSpec of a missing lab: %v", err)
	}
}

func TestDeclaresModule(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "go.mod")
	if err := os.WriteFile(p, []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if declaresModule(p) {
		t.Error("another module taken for this one")
	}
	if root, err := moduleRoot(); err != nil || !declaresModule(filepath.Join(root, "go.mod")) {
		t.Errorf("moduleRoot from the package dir: %q %v", root, err)
	}
}

// Without flanneld next to the (test) binary, FindBinaries builds them
// from the source tree into the state dir.
func TestFindBinariesBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flanneld and the CNI plugin")
	}
	state := t.TempDir()
	var said []string
	b, err := FindBinaries(context.Background(), "", t.TempDir(), state, func(f string, a ...any) { said = append(said, f) })
	if err != nil && !strings.Contains(err.Error(), "install-cni-tools.sh") {
		t.Fatalf("FindBinaries: %v", err)
	}
	for _, name := range []string{"flanneld", "flannel"} {
		if !isExec(filepath.Join(state, "bin", name)) {
			t.Errorf("%s not built into %s/bin", name, state)
		}
	}
	if err == nil && (!b.Built || b.Flanneld != filepath.Join(state, "bin", "flanneld")) {
		t.Errorf("binaries %+v", b)
	}
	if len(said) == 0 {
		t.Error("the build was not announced")
	}
	// An empty --bin-dir is refused with the command that fills it.
	if _, err := FindBinaries(context.Background(), t.TempDir(), testbed.DefaultCNIBinDir, state, func(string, ...any) {}); err == nil || !strings.Contains(err.Error(), "go build") {
		t.Errorf("empty --bin-dir: %v", err)
	}
}
