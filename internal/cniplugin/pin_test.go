package cniplugin

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/flannelgo/flannel/internal/antispoof"
)

type fakePins struct{ got []antispoof.Pod }

func (f *fakePins) Pin(_ context.Context, p antispoof.Pod) (bool, error) {
	f.got = append(f.got, p)
	return true, nil
}

// ADD records what the pod owns beside subnet.env and pins it before it
// returns; DEL forgets it. A result without interfaces (CNI before 0.3.0)
// gets no record and no error.
func TestAddRecordsAndPinsThePod(t *testing.T) {
	f := newFixture(t)
	pins := &fakePins{}
	f.plugin.Pins = pins
	args := f.args("1.0.0", "ctr1", "")
	args.Args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=ctr1"
	if err := f.plugin.Add(args); err != nil {
		t.Fatalf("Add: %v", err)
	}
	dir := antispoof.RecordDir(f.subnetFile)
	rec, err := antispoof.ReadRecord(dir, "ctr1")
	if err != nil {
		t.Fatalf("record: %v", err)
	}
	want := antispoof.Pod{ContainerID: "ctr1", Namespace: "x", Name: "a", Bridge: "cni0", HostIf: "veth0a1b2c3d",
		MAC: "0a:58:0a:f4:01:02", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}}
	if rec.String() != want.String() || rec.MAC != want.MAC || len(rec.IPs) != 1 || rec.IPs[0] != want.IPs[0] || rec.Bridge != "cni0" {
		t.Errorf("record = %+v, want %+v", rec, want)
	}
	if len(pins.got) != 1 || pins.got[0].HostIf != "veth0a1b2c3d" {
		t.Errorf("pinned %+v, want the pod once", pins.got)
	}
	if err := f.plugin.Del(args); err != nil {
		t.Fatalf("Del: %v", err)
	}
	if _, err := antispoof.ReadRecord(dir, "ctr1"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("record after DEL: %v, want none", err)
	}

	old := newFixture(t)
	if err := old.plugin.Add(old.args("0.2.0", "ctr2", "")); err != nil {
		t.Fatalf("Add 0.2.0: %v", err)
	}
	if matches, _ := filepath.Glob(filepath.Join(antispoof.RecordDir(old.subnetFile), "*")); len(matches) != 0 {
		t.Errorf("records for a 0.2.0 result: %v", matches)
	}
}
