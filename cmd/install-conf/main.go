// Command install-conf copies a file into place atomically: the DaemonSet's
// install-cni init container runs it as
//
//	/opt/bin/install-conf /etc/kube-flannel/cni-conf.json /etc/cni/net.d/10-flannel.conflist
//
// so that the kubelet, which rereads /etc/cni/net.d at any moment, never
// loads half a conflist (a plain cp truncates the target, then writes it).
// The copy takes the source's permission bits, as upstream flannel's
// install-conf does.
package main

import (
	"fmt"
	"os"

	"github.com/flannelgo/flannel/internal/atomicfile"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintf(os.Stderr, "usage: %s SOURCE DESTINATION\n", os.Args[0])
		os.Exit(2)
	}
	if err := install(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintf(os.Stderr, "install-conf: %v\n", err)
		os.Exit(1)
	}
}

// install replaces dst with src's content and permission bits.
func install(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(dst, data, st.Mode().Perm())
}
