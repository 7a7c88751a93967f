package deploy

import (
	"bytes"
	"errors"
	"regexp"
)

// commentedOut matches a YAML line that kube-flannel.yml keeps commented
// out for --network-policy: "#" right before a list item ("#- ...") or
// before a key indented under one ("#  verbs: ..."). Prose comments have a
// space after "#" and then a word, so they never match.
var commentedOut = regexp.MustCompile(`^(\s*)#(- |  [A-Za-z]+:)`)

// WithNetworkPolicy returns kube-flannel.yml as an operator turns network
// policy on: the lines the manifest keeps commented out for it (the
// --network-policy argument and the ClusterRole rules that go with it)
// uncommented, by deleting the "#", as its comments tell. Tests use it to
// check that those lines are right, and to run flanneld --network-policy
// with exactly the identity the manifest then grants.
func WithNetworkPolicy(manifest []byte) ([]byte, error) {
	lines := bytes.Split(manifest, []byte("\n"))
	n := 0
	for i, l := range lines {
		if m := commentedOut.FindSubmatchIndex(l); m != nil {
			// Drop the "#" that follows the indentation.
			lines[i] = append(append([]byte{}, l[:m[3]]...), l[m[3]+1:]...)
			n++
		}
	}
	if n == 0 {
		return nil, errors.New("kube-flannel.yml has no commented-out --network-policy lines (\"#- ...\")")
	}
	return bytes.Join(lines, []byte("\n")), nil
}
