// Command imagebuild writes flannel's container image as a docker-archive
// tarball, without Docker or a registry (see internal/imagebuild).
// scripts/image.sh builds the programs and runs it; run that instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"time"

	"github.com/flannelgo/flannel/internal/imagebuild"
)

func main() {
	o := imagebuild.Options{Arch: runtime.GOARCH, AptUpdate: true}
	flag.StringVar(&o.RepoDir, "repo", ".", "the repository root")
	flag.StringVar(&o.BinDir, "bin", "", "directory of the built programs (flanneld, flannel, flannelctl, install-conf)")
	flag.StringVar(&o.CacheDir, "cache", "/var/cache/flannel-go/image", "cache of .debs and the Debian layer")
	flag.StringVar(&o.Out, "out", "bin/flannel-image.tar", "the docker-archive tarball to write")
	flag.StringVar(&o.Tag, "tag", "", "the image's name and tag")
	flag.StringVar(&o.Version, "version", "v0.0.0-dev", "flannel's version, for the image's label")
	flag.Parse()
	if o.BinDir == "" || o.Tag == "" {
		fmt.Fprintln(os.Stderr, "imagebuild: -bin and -tag are required")
		os.Exit(2)
	}
	// SOURCE_DATE_EPOCH, the reproducible-builds convention, dates the
	// image; without it, the Unix epoch, so that reruns give the same image.
	o.Created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "imagebuild: SOURCE_DATE_EPOCH=%q: %v\n", s, err)
			os.Exit(2)
		}
		o.Created = time.Unix(sec, 0).UTC()
	}
	o.Logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "imagebuild: "+format+"\n", args...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := imagebuild.Build(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		os.Exit(1)
	}
}
