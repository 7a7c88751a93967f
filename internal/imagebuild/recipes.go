package imagebuild

import "path/filepath"

// The Kubernetes lab runs Kubernetes' own e2e suites (scripts/k8s-e2e.sh),
// whose pods exec shell pipelines of curl, `nc -v -t -w`, dig and getent in
// the agnhost and glibc-dns-testing images. No registry is reachable, so the
// lab builds both here, from one set of Debian packages: upstream's agnhost
// is Alpine with the same tools, glibc-dns-testing a glibc system with dig.

// testToolPackages are what the e2e suites' commands call.
func testToolPackages() []string {
	return []string{
		"base-files",
		"bash",           // the network-policy-api suite's probes
		"bind9-dnsutils", // dig, in every DNS spec
		"coreutils",      // seq, sleep, test, cat
		"curl",           // the Networking granular checks' dials
		"dash",           // /bin/sh
		"findutils",
		"grep",
		"iproute2",
		"iperf", // iperf2, as upstream's image has
		"iputils-ping",
		"libc-bin", // getent, for /etc/hosts specs
		"netcat-openbsd",
		"procps",
		"sed",
		"socat",
	}
}

// testToolAlternatives are the links the tools' maintainer scripts make
// with update-alternatives, which the builder does not run: the specs call
// nc and awk, not nc.openbsd and mawk.
func testToolAlternatives() []Link {
	return []Link{
		{Path: "/usr/bin/nc", Target: "nc.openbsd"},
		{Path: "/usr/bin/netcat", Target: "nc.openbsd"},
		{Path: "/usr/bin/awk", Target: "mawk"},
	}
}

// testTools is the recipe both test images start from: the packages, and
// the links their maintainer scripts would have made.
func testTools(title string) Recipe {
	return Recipe{
		Title:    title,
		Packages: testToolPackages(),
		Skipped:  Skipped(),
		Unlinked: Unlinked(),
		Links:    testToolAlternatives(),
	}
}

// Agnhost is Kubernetes' e2e test image: the agnhost program (built from
// k8s.io/kubernetes at the lab's version) over the tools, in upstream's
// layout: porter's TLS certificate and key (of the source's
// test/images/agnhost/porter, at porterDir) in /, netexec's /uploads, the
// agnhost-2 link the entrypoint specs call, and the default command pause,
// so that a container naming none pauses.
func Agnhost(program, porterDir string) Recipe {
	r := testTools("agnhost")
	r.Files = []File{{Path: "/agnhost", Host: program},
		{Path: "/localhost.crt", Host: filepath.Join(porterDir, "localhost.crt")},
		{Path: "/localhost.key", Host: filepath.Join(porterDir, "localhost.key")}}
	r.Links = append(r.Links, Link{Path: "/agnhost-2", Target: "agnhost"})
	r.Dirs = []string{"/uploads"}
	r.Entrypoint, r.Cmd = []string{"/agnhost"}, []string{"pause"}
	return r
}

// GlibcDNSTesting is the tools alone: the DNS specs' glibc querier. Its
// Debian layer is Agnhost's, so a node stores that once.
func GlibcDNSTesting() Recipe {
	r := testTools("glibc-dns-testing")
	r.Cmd = []string{"sleep", "infinity"}
	return r
}
