package cniplugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A subnetFile that is not a subnet.env (a misconfigured path, or one aimed
// at a secret) yields an error that names the file, the line and the key,
// and quotes nothing from it: the runtime writes the error to its log.
func TestSubnetEnvErrorQuotesNoContent(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"shadow", "root:$6$SECRET.hash/xyz:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n", []string{"line 1", "not KEY=VALUE"}},
		{"bad subnet", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=SECRET=1\n", []string{"line 2", "FLANNEL_SUBNET", "10.244.1.1/24"}},
		{"bad MTU", "FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=SECRET\n", []string{"line 2", "FLANNEL_MTU"}},
		{"bad network", "FLANNEL_NETWORK=10.244.0.0/16,SECRET\nFLANNEL_SUBNET=10.244.1.1/24\n", []string{"line 1", "FLANNEL_NETWORK"}},
		{"bad masq", "FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPMASQ=SECRET\n", []string{"line 2", "FLANNEL_IPMASQ"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if err := os.WriteFile(f.subnetFile, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			err := f.plugin.Add(f.args("1.0.0", "ctr1", `,"subnetFileWait":"0s"`))
			if err == nil {
				t.Fatal("ADD accepted a malformed subnet file")
			}
			msg := cniError(t, err).Error()
			if strings.Contains(msg, "SECRET") {
				t.Errorf("error quotes the file's content: %q", msg)
			}
			for _, w := range append([]string{f.subnetFile}, tc.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// Container IDs of any length the CNI spec allows work through ADD, CHECK
// and DEL: up to 255 bytes the state file is named by the ID (as upstream),
// beyond that by a shortened, hashed name.
func TestLongContainerIDs(t *testing.T) {
	f := newFixture(t)
	for _, n := range []int{64, 245, 255, 256, 300, 1000} {
		id := strings.Repeat("c", n-4) + "-" + strings.Repeat("9", 3)
		if err := f.plugin.Add(f.args("1.0.0", id, "")); err != nil {
			t.Errorf("ADD of a %d-character container ID: %v", n, err)
			continue
		}
		path, err := statePath(f.dataDir, id)
		if err != nil {
			t.Fatal(err)
		}
		if name := filepath.Base(path); (n <= 255) != (name == id) || len(name) > 255 {
			t.Errorf("%d-character ID saved as %q (%d bytes)", n, name, len(name))
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%d-character ID: state not saved: %v", n, err)
		}
		if err := f.plugin.Check(f.args("1.0.0", id, "")); err != nil {
			t.Errorf("CHECK of a %d-character container ID: %v", n, err)
		}
		if err := f.plugin.Del(f.args("1.0.0", id, "")); err != nil {
			t.Errorf("DEL of a %d-character container ID: %v", n, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%d-character ID: state left after DEL: %v", n, err)
		}
	}
	// Two long IDs that share their first 190 bytes keep separate state.
	a, b := strings.Repeat("x", 299)+"a", strings.Repeat("x", 299)+"b"
	pa, _ := statePath(f.dataDir, a)
	pb, _ := statePath(f.dataDir, b)
	if pa == pb {
		t.Errorf("IDs %q… and %q… share state file %s", a[:8], b[:8], pa)
	}
}
