//go:build nodeimage

package main

import (
	"fmt"
	"io"
)

// runLab in the node image's flannelctl: the lab builds whole clusters
// with an embedded etcd and kube-apiserver harness, which a node never
// needs; leaving it out keeps them out of the image.
func runLab(_ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "flannelctl lab: not in this build (the node image's flannelctl has doctor and policy only); "+
		"build flannelctl from source on a machine for labs: go build ./cmd/flannelctl")
	return 2
}
