package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/flannelgo/flannel/internal/tools/lab"
	"github.com/flannelgo/flannel/internal/version"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb strings.Builder
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// Every usage error exits 2 and says what is wrong and how to get help;
// nothing is done.
func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"lab"}, {"lab", "nosuch"}, {"policy"}, {"policy", "nosuch"},
		{"doctor", "--bogus"}, {"doctor", "--output=xml"}, {"doctor", "extra"}, {"doctor", "--net-conf-configmap=noslash"},
		{"doctor", "--timeout=soon"},
		{"policy", "explain", "--from", "x/a"}, {"policy", "explain", "--from", "x/a", "--to", "x/b:http"},
		{"lab", "up", "--nodes", "0"}, {"lab", "up", "--nodes", "many"}, {"lab", "up", "--name", "Bad-Name"},
		{"lab", "up", "--backend", "vxlna"}, {"lab", "up", "--pod-mtu", "big"}, {"lab", "up", "extra"},
		{"lab", "exec"}, {"lab", "doctor"}, {"version", "extra"},
	} {
		if len(args) > 1 && args[0] == "lab" { // never near a real lab's state
			args = append(args[:2:2], append([]string{"--state-root", t.TempDir()}, args[2:]...)...)
		}
		code, _, stderr := runCLI(args...)
		if code != 2 || stderr == "" {
			t.Errorf("flannelctl %s: exit %d, want 2 with a message; stderr:\n%s", strings.Join(args, " "), code, stderr)
		}
	}
}

// --help of every command, and `help CMD`, print its help on stdout and
// exit 0; every command has a description and examples.
func TestEveryCommandHasHelp(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		path := strings.Fields(c.CommandPath())[1:]
		code, stdout, stderr := runCLI(append(path, "--help")...)
		if code != 0 || !strings.Contains(stdout, "Usage:") || stderr != "" {
			t.Errorf("flannelctl %s --help: exit %d, stdout %q, stderr %q", strings.Join(path, " "), code, stdout, stderr)
		}
		if c.Short == "" {
			t.Errorf("flannelctl %s has no description", strings.Join(path, " "))
		}
		if c.Example == "" && !strings.HasPrefix(c.CommandPath(), "flannelctl completion") {
			t.Errorf("flannelctl %s has no example", strings.Join(path, " "))
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := rootCommand(nil, nil)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root)
	if code, stdout, _ := runCLI("help", "doctor"); code != 0 || !strings.Contains(stdout, "--bundle") {
		t.Errorf("flannelctl help doctor: exit %d\n%s", code, stdout)
	}
}

func TestVersion(t *testing.T) {
	want := "flannelctl " + version.Version + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if code, stdout, _ := runCLI(args...); code != 0 || stdout != want {
			t.Errorf("flannelctl %s: exit %d, %q, want %q", args[0], code, stdout, want)
		}
	}
}

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_flannelctl", "zsh": "#compdef flannelctl", "fish": "complete -c flannelctl", "powershell": "Register-ArgumentCompleter"} {
		if code, stdout, _ := runCLI("completion", shell); code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("flannelctl completion %s: exit %d, lacks %q", shell, code, want)
		}
	}
}

// One --kubeconfig everywhere; flanneld's --kubeconfig-file is kept as a
// hidden alias that sets the same value.
func TestKubeconfigFlagAndItsAlias(t *testing.T) {
	for _, build := range []func() *cobra.Command{doctorCommand, explainCommand} {
		for _, flag := range []string{"--kubeconfig", "--kubeconfig-file"} {
			cmd := build()
			if err := cmd.ParseFlags([]string{flag + "=/etc/kc.conf"}); err != nil {
				t.Fatalf("%s %s: %v", cmd.Name(), flag, err)
			}
			if got := cmd.Flags().Lookup("kubeconfig").Value.String(); got != "/etc/kc.conf" {
				t.Errorf("%s %s=/etc/kc.conf: --kubeconfig is %q", cmd.Name(), flag, got)
			}
			if f := cmd.Flags().Lookup("kubeconfig-file"); f == nil || !f.Hidden {
				t.Errorf("%s: --kubeconfig-file missing or shown in help", cmd.Name())
			}
		}
	}
	if code, stdout, _ := runCLI("doctor", "--help"); code != 0 || strings.Contains(stdout, "kubeconfig-file") || !strings.Contains(stdout, "--kubeconfig ") {
		t.Errorf("doctor --help shows the alias or lacks --kubeconfig:\n%s", stdout)
	}
}

// A check that fails exits 1, distinct from bad usage: doctor with its
// datastore unreachable (nothing listens on port 1 of loopback).
func TestFailedCheckExits1(t *testing.T) {
	code, stdout, stderr := runCLI("doctor", "--etcd-endpoints=http://127.0.0.1:1", "--subnet-file="+filepath.Join(t.TempDir(), "subnet.env"), "--timeout=30s")
	if code != 1 || !strings.Contains(stdout, "PROBLEM") {
		t.Errorf("doctor against no etcd: exit %d, want 1\n%s%s", code, stdout, stderr)
	}
}

// `lab up` refuses a backend this kernel lacks before it builds anything:
// no state directory appears.
func TestLabUpChecksTheKernelFirst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (the ipip probe creates a device in a namespace of its own)")
	}
	err := lab.CheckBackend("ipip")
	if err == nil {
		return // this kernel has ipip: nothing to refuse
	}
	if errors.Is(err, lab.ErrUnknownBackend) || !strings.Contains(err.Error(), "lacks ipip") {
		t.Fatalf("CheckBackend(ipip) = %v", err)
	}
	root := t.TempDir()
	code, _, stderr := runCLI("lab", "up", "--name", "ipchk", "--state-root", root, "--backend", "ipip")
	if code != 1 || !strings.Contains(stderr, "modprobe ipip") {
		t.Errorf("lab up --backend ipip: exit %d, want 1 naming the module:\n%s", code, stderr)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("lab up left %d entries in its state root: it started work", len(entries))
	}
}
