//go:build nodeimage

package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// labCommand in the node image's flannelctl: the lab builds whole clusters
// with an embedded etcd and kube-apiserver harness, which a node never
// needs; leaving it out keeps them out of the image.
func labCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "lab",
		Short:              "Not in this build: the node image's flannelctl has doctor and policy only",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.ErrOrStderr(), "flannelctl lab: not in this build (the node image's flannelctl has doctor and policy only); "+
				"build flannelctl from source on a machine for labs: go build ./cmd/flannelctl")
			return exitCode(2)
		},
	}
}
