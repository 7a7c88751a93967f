// Package version holds the build's version, set at link time with
// -ldflags "-X github.com/flannelgo/flannel/internal/version.Version=...".
package version

// Version is overwritten by the linker for release builds.
var Version = "v0.0.0-dev"
