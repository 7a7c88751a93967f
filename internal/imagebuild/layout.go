package imagebuild

// Recipe says what an image is made of: Debian packages (with their
// dependencies, less Skipped) in one layer, and Files and Links on top.
type Recipe struct {
	Title    string // the image's org.opencontainers.image.title
	Packages []string
	Skipped  map[string]string // package: why the image leaves it out
	Unlinked map[string]string // library: why files may link it unresolved
	Files    []File
	Links    []Link
	Dirs     []string // empty directories
	// Entrypoint and Cmd as in a Dockerfile.
	Entrypoint, Cmd []string
}

// File is one file a recipe adds on top of the Debian packages.
type File struct {
	// Path is where the file sits in the image.
	Path string
	// Binary names a program built from cmd/<Binary> (CGO off), found in
	// Options.BinDir; Source names a file of the repository; Host an
	// absolute path on the building machine.
	Binary, Source, Host string
}

// Link is a symbolic link a recipe adds on top of the Debian packages.
type Link struct{ Path, Target string }

// Flannel is flannel's image, in upstream flannel's layout.
func Flannel() Recipe {
	r := Recipe{
		Title:      "flannel",
		Packages:   Packages(),
		Skipped:    Skipped(),
		Unlinked:   Unlinked(),
		Files:      Layout(),
		Entrypoint: []string{"/opt/bin/flanneld"},
	}
	for _, c := range WrappedCommands() {
		r.Links = append(r.Links, Link{Path: "/usr/sbin/" + c, Target: "iptables-wrapper"})
	}
	return r
}

// Layout is upstream flannel's image layout, which the manifest and every
// existing install rely on, plus flannelctl for an operator inside the pod.
// deploy/Dockerfile copies the same files to the same places (a test
// compares them).
func Layout() []File {
	return []File{
		{Path: "/opt/bin/flanneld", Binary: "flanneld"},
		{Path: "/opt/bin/install-conf", Binary: "install-conf"},
		{Path: "/opt/bin/mk-docker-opts.sh", Source: "deploy/image/mk-docker-opts.sh"},
		// The install-cni-plugin init container copies it to the host's
		// /opt/cni/bin/flannel.
		{Path: "/flannel", Binary: "flannel"},
		{Path: "/usr/local/bin/flannelctl", Binary: "flannelctl"},
		{Path: "/usr/sbin/iptables-wrapper", Source: "deploy/image/iptables-wrapper"},
	}
}

// WrappedCommands are the commands that deploy/image/iptables-wrapper
// stands in for until it has chosen the host's back end; the image points
// each at it, as `iptables-wrapper install` does in the Dockerfile.
func WrappedCommands() []string {
	return []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}
}

// Packages are the Debian packages the image is made of (with their
// dependencies, less Skipped): what flanneld calls and what an operator
// needs inside the pod.
func Packages() []string {
	return []string{
		"base-files",                     // /etc/os-release, the directory skeleton
		"ca-certificates",                // TLS to etcd, the API server, cloud APIs
		"coreutils",                      // cp for the manifest's init containers
		"dash",                           // /bin/sh for the wrapper and mk-docker-opts.sh
		"iproute2",                       // ip, bridge, ss for debugging in the pod
		"iptables",                       // legacy and nft back ends; go-iptables calls them
		"nftables",                       // nft; knftables calls it
		"strongswan-charon",              // charon for the ipsec backend
		"libstrongswan-standard-plugins", // openssl, gcm: the default proposal's ecp256 and AES-GCM
		"strongswan-swanctl",             // the VICI plugin and swanctl to inspect it
		"libcharon-extra-plugins",        // kernel-libipsec, where the kernel lacks ESP
		"wireguard-tools",                // wg to inspect the wireguard backend
	}
}

// Skipped are packages that the dependency closure of Packages pulls in
// but that nothing in the image runs: they serve maintainer scripts, which
// this builder does not run (it unpacks, and does their few useful steps
// itself), or log-ins. The builder checks that every program and library
// left in the image finds the libraries it links.
func Skipped() map[string]string {
	const scripts = "maintainer scripts only"
	return map[string]string{
		"adduser":                scripts,
		"debconf":                scripts,
		"dpkg":                   scripts,
		"init-system-helpers":    scripts,
		"libfile-find-rule-perl": scripts,
		"libgdbm-compat4":        scripts,
		"libgdbm6":               scripts,
		"libnumber-compare-perl": scripts,
		"libperl5.36":            scripts,
		"libtext-glob-perl":      scripts,
		"passwd":                 scripts,
		"perl":                   scripts,
		"perl-base":              scripts,
		"perl-modules-5.36":      scripts,
		"sysvinit-utils":         "init scripts only",
		"tar":                    "dpkg only",
		"usrmerge":               "the builder lays out /bin, /sbin and /lib as links into /usr itself",
		"libpam-modules":         "log-ins only (passwd)",
		"libpam-modules-bin":     "log-ins only (passwd)",
		"libsemanage-common":     "log-ins only (passwd)",
		"libsemanage2":           "log-ins only (passwd)",
		"libsepol2":              "log-ins only (passwd)",
	}
}

// Unlinked are libraries some file of the image links but that the image
// leaves out, as Debian does without recommends (the Dockerfile's
// --no-install-recommends gives the same): the file fails only if loaded.
func Unlinked() map[string]string {
	return map[string]string{
		"libatm.so.1": "iproute2's tc plugin for the ATM qdisc (libatm1 is a Recommends)",
	}
}
