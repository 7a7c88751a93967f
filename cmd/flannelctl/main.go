// Command flannelctl is the operator's tool for flannel: `lab` runs a real
// multi-node flannel cluster in network namespaces on this machine,
// `doctor` checks a node for the known failure modes, `policy explain`
// says why a connection is allowed or denied.
//
// Exit codes, the same for every command: 0 success, 1 a check or an
// operation failed, 2 the command line is wrong (nothing was done).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/flannelgo/flannel/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// exitCode ends a command with a code of its own: 1 for a failed check
// (already reported), or a child's code (lab exec, lab kubectl).
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// usageError is a wrong command line, found before any work started.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// run executes one command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	defer klog.Flush()
	root := rootCommand(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	var code exitCode
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &usage):
		err = usage.err
	}
	// Anything else is cobra's own: an unknown command or flag, wrong
	// arguments. All are usage errors.
	use := cmd.UseLine()
	if cmd.HasAvailableSubCommands() {
		use = cmd.CommandPath() + " COMMAND [flags]"
	}
	fmt.Fprintf(stderr, "%s: %v\nusage: %s\nRun '%s --help' for more.\n", cmd.CommandPath(), err, use, cmd.CommandPath())
	return 2
}

func rootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "flannelctl",
		Short: "The flannel operator's tool",
		Long: `flannelctl is the flannel operator's tool: a real multi-node flannel cluster in
network namespaces on this machine (lab), a check of a node for the known
failure modes (doctor), and why a connection is allowed or denied by
NetworkPolicies (policy explain).

Exit codes, the same for every command: 0 success, 1 a check or an operation
failed, 2 the command line is wrong (nothing was done).`,
		Example: `  flannelctl lab up --name demo --nodes 3 --backend vxlan
  flannelctl doctor --etcd-endpoints=http://127.0.0.1:2379 --healthz=127.0.0.1:10244
  flannelctl doctor --kube-subnet-mgr --kubeconfig=/etc/kubernetes/admin.conf --node-name=$(hostname) --bundle=/tmp/n1.tar.gz
  flannelctl policy explain --from default/client --to default/server:80/TCP`,
		Version:       version.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noArgs,
		RunE:          needSubcommand,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetVersionTemplate("flannelctl {{.Version}}\n")
	// No -v shorthand: in the lab commands -v is the log verbosity.
	root.Flags().Bool("version", false, "print flannelctl's version")
	root.AddCommand(labCommand(), doctorCommand(), policyCommand(), versionCommand())
	return root
}

// needSubcommand is the action of a command that only groups others: the
// bare group is a usage error, and its help lists what to type.
func needSubcommand(cmd *cobra.Command, _ []string) error {
	cmd.SetOut(cmd.ErrOrStderr())
	_ = cmd.Help()
	return exitCode(2)
}

// noArgs refuses positional arguments, naming an unknown subcommand as
// such.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasSubCommands() {
		return usagef("unknown command %q", args[0])
	}
	return usagef("unexpected arguments %q", args)
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print flannelctl's version",
		Example: "  flannelctl version",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "flannelctl %s\n", version.Version)
			return nil
		},
	}
}
