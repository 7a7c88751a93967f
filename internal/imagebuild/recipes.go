package imagebuild

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
		"iputils-ping",
		"libc-bin", // getent, for /etc/hosts specs
		"netcat-openbsd",
		"procps",
		"sed",
	}
}

// Agnhost is Kubernetes' e2e test image: agnhost (built from
// k8s.io/kubernetes at the lab's version, at agnhost) over the tools, with
// upstream's default command, so that a container naming none pauses.
func Agnhost(agnhost string) Recipe {
	return Recipe{
		Title:      "agnhost",
		Packages:   testToolPackages(),
		Skipped:    Skipped(),
		Unlinked:   Unlinked(),
		Files:      []File{{Path: "/agnhost", Host: agnhost}},
		Entrypoint: []string{"/agnhost"},
		Cmd:        []string{"pause"},
	}
}

// GlibcDNSTesting is the tools alone: the DNS specs' glibc querier. Its
// one layer is Agnhost's lower one, so a node stores it once.
func GlibcDNSTesting() Recipe {
	return Recipe{
		Title:    "glibc-dns-testing",
		Packages: testToolPackages(),
		Skipped:  Skipped(),
		Unlinked: Unlinked(),
		Cmd:      []string{"sleep", "infinity"},
	}
}
