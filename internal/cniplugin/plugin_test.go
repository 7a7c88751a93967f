package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/flannelgo/flannel/internal/subnetenv"
)

type execCall struct {
	command, plugin string
	conf            map[string]any
}

// fakeExec stands in for the delegate plugins: it records what it was
// asked and answers like bridge would.
type fakeExec struct {
	mu       sync.Mutex
	calls    []execCall
	fail     map[string]*types.Error // by CNI_COMMAND
	versions []string
	missing  bool
}

func (f *fakeExec) ExecPlugin(_ context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := ""
	for _, e := range environ {
		if v, ok := strings.CutPrefix(e, "CNI_COMMAND="); ok {
			cmd = v
		}
	}
	conf := map[string]any{}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, fmt.Errorf("fake delegate got bad stdin %q: %v", stdin, err)
	}
	f.mu.Lock()
	f.calls = append(f.calls, execCall{cmd, filepath.Base(pluginPath), conf})
	f.mu.Unlock()
	if e := f.fail[cmd]; e != nil {
		return nil, e
	}
	switch cmd {
	case "VERSION":
		versions := f.versions
		if versions == nil {
			versions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}
		}
		return json.Marshal(map[string]any{"cniVersion": "1.1.0", "supportedVersions": versions})
	case "ADD":
		if v := conf["cniVersion"]; v == "0.1.0" || v == "0.2.0" {
			return []byte(fmt.Sprintf(`{"cniVersion":%q,
				"ip4":{"ip":"10.244.1.2/24","gateway":"10.244.1.1","routes":[{"dst":"10.244.0.0/16"}]}}`, v)), nil
		}
		return []byte(fmt.Sprintf(`{"cniVersion":%q,
			"interfaces":[{"name":"cni0"},{"name":"veth0a1b2c3d"},{"name":"eth0","mac":"0a:58:0a:f4:01:02","sandbox":"/var/run/netns/x"}],
			"ips":[{"version":"4","address":"10.244.1.2/24","gateway":"10.244.1.1","interface":2}],
			"routes":[{"dst":"10.244.0.0/16"}]}`, conf["cniVersion"])), nil
	}
	return nil, nil
}

func (f *fakeExec) FindInPath(plugin string, _ []string) (string, error) {
	if f.missing {
		return "", fmt.Errorf("failed to find plugin %q", plugin)
	}
	return "/fake/" + plugin, nil
}

func (f *fakeExec) Decode(data []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(data)
}

func (f *fakeExec) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		out = append(out, c.plugin+" "+c.command)
	}
	return out
}

func (f *fakeExec) last() execCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[len(f.calls)-1]
}

type fixture struct {
	subnetFile, dataDir string
	exec                *fakeExec
	out                 *bytes.Buffer
	plugin              *Plugin
}

func newFixture(t *testing.T) *fixture {
	dir := t.TempDir()
	f := &fixture{
		subnetFile: filepath.Join(dir, "run", "subnet.env"),
		dataDir:    filepath.Join(dir, "data"),
		exec:       &fakeExec{},
		out:        &bytes.Buffer{},
	}
	f.plugin = &Plugin{Exec: f.exec, Stdout: f.out}
	if err := subnetenv.Write(f.subnetFile, testEnv()); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) args(cniVersion, containerID string, extra string) *skel.CmdArgs {
	conf := fmt.Sprintf(`{"cniVersion":%q,"name":"cbr0","type":"flannel","subnetFile":%q,"dataDir":%q,
		"delegate":{"hairpinMode":true,"isDefaultGateway":true}%s}`, cniVersion, f.subnetFile, f.dataDir, extra)
	return &skel.CmdArgs{
		ContainerID: containerID,
		Netns:       "/var/run/netns/x",
		IfName:      "eth0",
		Path:        "/fake",
		StdinData:   []byte(conf),
	}
}

func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a CNI *types.Error", err, err)
	}
	return e
}

// Every CNI version upstream's plugin accepts (version.All, 0.1.0 on) goes
// through ADD with the result in the caller's version.
func TestAddDelegatesAndSavesConfig(t *testing.T) {
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			f := newFixture(t)
			if err := f.plugin.Add(f.args(v, "ctr1", "")); err != nil {
				t.Fatalf("Add: %v", err)
			}
			if got := f.exec.commands(); len(got) != 1 || got[0] != "bridge ADD" {
				t.Fatalf("delegate calls = %v, want [bridge ADD]", got)
			}
			sent := f.exec.last().conf
			if sent["cniVersion"] != v || sent["name"] != "cbr0" || sent["mtu"] != 1450.0 || sent["hairpinMode"] != true {
				t.Errorf("delegate conf = %v", sent)
			}
			var res map[string]any
			if err := json.Unmarshal(f.out.Bytes(), &res); err != nil {
				t.Fatalf("ADD printed %q: %v", f.out, err)
			}
			if res["cniVersion"] != v {
				t.Errorf("result cniVersion = %v, want %s", res["cniVersion"], v)
			}
			if !strings.Contains(f.out.String(), "10.244.1.2/24") {
				t.Errorf("result lost the pod address: %s", f.out)
			}
			path := filepath.Join(f.dataDir, "ctr1")
			st, err := os.Stat(path)
			if err != nil {
				t.Fatalf("saved config: %v", err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("saved config mode = %v, want 0600", st.Mode().Perm())
			}
			saved := map[string]any{}
			data, _ := os.ReadFile(path)
			if err := json.Unmarshal(data, &saved); err != nil {
				t.Fatal(err)
			}
			assertJSON(t, saved, string(mustJSON(t, sent)))
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAddMissingSubnetEnv(t *testing.T) {
	f := newFixture(t)
	os.Remove(f.subnetFile)
	start := time.Now()
	err := f.plugin.Add(f.args("0.3.1", "ctr1", `,"subnetFileWait":"300ms"`))
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("ADD gave up after %s, want the configured 300ms", took)
	}
	e := cniError(t, err)
	if e.Code != types.ErrTryAgainLater {
		t.Errorf("code = %d, want %d", e.Code, types.ErrTryAgainLater)
	}
	msg := e.Error()
	for _, want := range []string{"failed to load flannel 'subnet.env' file", f.subnetFile, "no such file or directory", "flanneld has not written",
		"flanneld is not ready: " + f.subnetFile + " did not appear within 300ms"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if got := f.exec.commands(); len(got) != 0 {
		t.Errorf("delegate called without subnet.env: %v", got)
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "ctr1")); !os.IsNotExist(err) {
		t.Errorf("config saved although ADD could not start: %v", err)
	}
}

// ADD waits for a subnet.env that flanneld writes a moment later.
func TestAddWaitsForSubnetEnv(t *testing.T) {
	f := newFixture(t)
	os.Remove(f.subnetFile)
	written := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond) // flanneld, a little later
		written <- subnetenv.Write(f.subnetFile, testEnv())
	}()
	if err := f.plugin.Add(f.args("1.0.0", "ctr1", `,"subnetFileWait":"5s"`)); err != nil {
		t.Fatalf("ADD with subnet.env written during the wait: %v", err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if _, err := ParseNetConf([]byte(`{"name":"x","type":"flannel","subnetFileWait":"soon"}`)); err == nil {
		t.Error("subnetFileWait \"soon\" accepted")
	}
}

func TestAddMalformedSubnetEnv(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(f.subnetFile, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=bogus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := cniError(t, f.plugin.Add(f.args("1.0.0", "ctr1", "")))
	if e.Code != types.ErrDecodingFailure || !strings.Contains(e.Error(), f.subnetFile) || !strings.Contains(e.Error(), "FLANNEL_SUBNET") {
		t.Errorf("error = %d %q, want code 6 naming the file and FLANNEL_SUBNET", e.Code, e.Error())
	}
}

func TestAddBadDelegate(t *testing.T) {
	f := newFixture(t)
	a := f.args("1.0.0", "ctr1", "")
	a.StdinData = []byte(strings.Replace(string(a.StdinData), `"hairpinMode":true`, `"name":"x"`, 1))
	e := cniError(t, f.plugin.Add(a))
	if e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, "'name'") {
		t.Errorf("error = %d %q", e.Code, e.Msg)
	}
}

func TestAddDelegateFailureKeepsItsCode(t *testing.T) {
	f := newFixture(t)
	f.exec.fail = map[string]*types.Error{"ADD": types.NewError(types.ErrInvalidNetworkConfig, "bridge says no", "")}
	e := cniError(t, f.plugin.Add(f.args("1.0.0", "ctr1", "")))
	if e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, "delegate bridge ADD failed: bridge says no") {
		t.Errorf("error = %d %q", e.Code, e.Msg)
	}
	// The runtime follows a failed ADD with DEL, which needs the config.
	if _, err := os.Stat(filepath.Join(f.dataDir, "ctr1")); err != nil {
		t.Errorf("config not kept for the runtime's DEL: %v", err)
	}
}

func TestDelUsesSavedConfigAfterSubnetEnvChanged(t *testing.T) {
	f := newFixture(t)
	if err := f.plugin.Add(f.args("1.0.0", "ctr1", "")); err != nil {
		t.Fatal(err)
	}
	added := f.exec.last().conf
	env := testEnv()
	env.Subnet = mustPrefix(t, "10.244.7.1/24")
	env.MTU = 1400
	if err := subnetenv.Write(f.subnetFile, env); err != nil {
		t.Fatal(err)
	}
	if err := f.plugin.Del(f.args("1.0.0", "ctr1", "")); err != nil {
		t.Fatalf("Del: %v", err)
	}
	call := f.exec.last()
	if call.command != "DEL" || call.plugin != "bridge" {
		t.Fatalf("last call = %s %s", call.plugin, call.command)
	}
	assertJSON(t, call.conf, string(mustJSON(t, added)))
	if _, err := os.Stat(filepath.Join(f.dataDir, "ctr1")); !os.IsNotExist(err) {
		t.Errorf("saved config not removed after DEL: %v", err)
	}
}

func TestDelAfterSubnetEnvRemoved(t *testing.T) {
	f := newFixture(t)
	if err := f.plugin.Add(f.args("0.3.1", "ctr1", "")); err != nil {
		t.Fatal(err)
	}
	os.Remove(f.subnetFile)
	if err := f.plugin.Del(f.args("0.3.1", "ctr1", "")); err != nil {
		t.Fatalf("Del without subnet.env: %v", err)
	}
	if got := f.exec.commands(); len(got) != 2 || got[1] != "bridge DEL" {
		t.Errorf("calls = %v", got)
	}
}

func TestDelUnknownContainer(t *testing.T) {
	f := newFixture(t)
	os.Remove(f.subnetFile)
	if err := f.plugin.Del(f.args("1.0.0", "never-added", "")); err != nil {
		t.Fatalf("Del of unknown container: %v", err)
	}
	if got := f.exec.commands(); len(got) != 0 {
		t.Errorf("delegate called for an unknown container: %v", got)
	}
}

func TestDelFailureKeepsConfigForRetry(t *testing.T) {
	f := newFixture(t)
	if err := f.plugin.Add(f.args("1.0.0", "ctr1", "")); err != nil {
		t.Fatal(err)
	}
	f.exec.fail = map[string]*types.Error{"DEL": types.NewError(types.ErrTryAgainLater, "busy", "")}
	e := cniError(t, f.plugin.Del(f.args("1.0.0", "ctr1", "")))
	if e.Code != types.ErrTryAgainLater {
		t.Errorf("code = %d", e.Code)
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "ctr1")); err != nil {
		t.Fatalf("config lost after failed DEL: %v", err)
	}
	f.exec.fail = nil
	if err := f.plugin.Del(f.args("1.0.0", "ctr1", "")); err != nil {
		t.Fatalf("retried Del: %v", err)
	}
}

// DEL with a saved config it cannot read succeeds and says so on standard
// error, as upstream's plugin: an error would have the runtime retry the
// pod's teardown forever.
func TestDelCorruptSavedConfig(t *testing.T) {
	for name, content := range map[string]string{"not JSON": "{", "no type": `{"cniVersion":"1.0.0","name":"cbr0"}`} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			var stderr bytes.Buffer
			f.plugin.Stderr = &stderr
			if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(f.dataDir, "ctr1")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := f.plugin.Del(f.args("1.0.0", "ctr1", "")); err != nil {
				t.Fatalf("Del with a corrupt saved config: %v, want success", err)
			}
			if got := f.exec.commands(); len(got) != 0 {
				t.Errorf("delegate called with a config that cannot be read: %v", got)
			}
			for _, w := range []string{"container ctr1", path, "release them by hand"} {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("standard error %q does not contain %q", stderr.String(), w)
				}
			}
			if err := f.plugin.Del(f.args("1.0.0", "ctr1", "")); err != nil {
				t.Errorf("second Del: %v", err)
			}
		})
	}
}

func TestCheckUsesSavedConfigAndPrevResult(t *testing.T) {
	f := newFixture(t)
	if err := f.plugin.Add(f.args("1.0.0", "ctr1", "")); err != nil {
		t.Fatal(err)
	}
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1"}]}`
	os.Remove(f.subnetFile) // CHECK must not need it
	if err := f.plugin.Check(f.args("1.0.0", "ctr1", prev)); err != nil {
		t.Fatalf("Check: %v", err)
	}
	call := f.exec.last()
	if call.command != "CHECK" || call.plugin != "bridge" {
		t.Fatalf("last call = %s %s", call.plugin, call.command)
	}
	assertJSON(t, call.conf["prevResult"], `{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1"}]}`)
	if call.conf["mtu"] != 1450.0 || call.conf["ipam"] == nil {
		t.Errorf("CHECK conf is not the saved one: %v", call.conf)
	}

	f.exec.fail = map[string]*types.Error{"CHECK": types.NewError(types.ErrInternal, "eth0 is gone", "")}
	e := cniError(t, f.plugin.Check(f.args("1.0.0", "ctr1", prev)))
	if !strings.Contains(e.Msg, "eth0 is gone") {
		t.Errorf("CHECK failure = %q", e.Msg)
	}
}

func TestCheckUnknownContainer(t *testing.T) {
	f := newFixture(t)
	e := cniError(t, f.plugin.Check(f.args("1.0.0", "nope", "")))
	if e.Code != types.ErrUnknownContainer || !strings.Contains(e.Msg, filepath.Join(f.dataDir, "nope")) {
		t.Errorf("error = %d %q", e.Code, e.Msg)
	}
}

func TestStatus(t *testing.T) {
	t.Run("missing subnet.env", func(t *testing.T) {
		f := newFixture(t)
		os.Remove(f.subnetFile)
		e := cniError(t, f.plugin.Status(f.args("1.1.0", "", "")))
		if e.Code != types.ErrPluginNotAvailable {
			t.Errorf("code = %d, want 50", e.Code)
		}
		if !strings.Contains(e.Error(), f.subnetFile) || !strings.Contains(e.Error(), "flanneld has not written") {
			t.Errorf("error %q does not name the file or say flanneld has not written it", e.Error())
		}
	})
	t.Run("delegate supports STATUS", func(t *testing.T) {
		f := newFixture(t)
		if err := f.plugin.Status(f.args("1.1.0", "", "")); err != nil {
			t.Fatal(err)
		}
		if got := f.exec.commands(); strings.Join(got, ",") != "bridge VERSION,bridge STATUS" {
			t.Errorf("calls = %v", got)
		}
		if ipam, _ := f.exec.last().conf["ipam"].(map[string]any); ipam["type"] != "host-local" {
			t.Errorf("STATUS conf lacks IPAM: %v", f.exec.last().conf)
		}
	})
	t.Run("delegate fails STATUS", func(t *testing.T) {
		f := newFixture(t)
		f.exec.fail = map[string]*types.Error{"STATUS": types.NewError(types.ErrLimitedConnectivity, "degraded", "")}
		e := cniError(t, f.plugin.Status(f.args("1.1.0", "", "")))
		if e.Code != types.ErrLimitedConnectivity {
			t.Errorf("code = %d", e.Code)
		}
	})
	t.Run("old delegate", func(t *testing.T) {
		f := newFixture(t)
		f.exec.versions = []string{"0.3.1", "0.4.0", "1.0.0"}
		if err := f.plugin.Status(f.args("1.1.0", "", "")); err != nil {
			t.Fatal(err)
		}
		if got := f.exec.commands(); strings.Join(got, ",") != "bridge VERSION" {
			t.Errorf("calls = %v, want only VERSION", got)
		}
	})
	t.Run("delegate not installed", func(t *testing.T) {
		f := newFixture(t)
		f.exec.missing = true
		e := cniError(t, f.plugin.Status(f.args("1.1.0", "", "")))
		if e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Msg, `"bridge"`) {
			t.Errorf("error = %d %q", e.Code, e.Msg)
		}
	})
}

func TestVersionInfo(t *testing.T) {
	got := strings.Join(VersionInfo().SupportedVersions(), ",")
	if got != "0.1.0,0.2.0,0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
		t.Errorf("supported versions = %s", got)
	}
}
