// Command imagebuild writes a container image as a docker-archive tarball,
// without Docker or a registry (see internal/imagebuild): flannel's, which
// scripts/image.sh builds the programs for (run that instead), or the
// Kubernetes lab's e2e test images (scripts/build-kube-images.sh).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
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
	flag.StringVar(&o.Version, "version", "v0.0.0-dev", "the image's version label")
	recipe := flag.String("recipe", "flannel", "the image: flannel, or agnhost or glibc-dns-testing for the Kubernetes lab's e2e suites")
	agnhost := flag.String("agnhost", "", "the agnhost program (-recipe agnhost)")
	porter := flag.String("porter", "", "k8s.io/kubernetes' test/images/agnhost/porter, for its TLS certificate and key (-recipe agnhost)")
	var extra []imagebuild.File
	flag.Func("file", "DEST=SRC: also copy SRC of this machine to DEST in the image; repeatable", func(v string) error {
		dest, src, ok := strings.Cut(v, "=")
		if !ok || !strings.HasPrefix(dest, "/") || src == "" {
			return fmt.Errorf("want /DEST=SRC, got %q", v)
		}
		extra = append(extra, imagebuild.File{Path: dest, Host: src})
		return nil
	})
	flag.Parse()
	switch *recipe {
	case "flannel":
		o.Recipe = imagebuild.Flannel()
	case "agnhost":
		o.Recipe = imagebuild.Agnhost(*agnhost, *porter)
	case "glibc-dns-testing":
		o.Recipe = imagebuild.GlibcDNSTesting()
	default:
		fmt.Fprintf(os.Stderr, "imagebuild: -recipe %q: want flannel, agnhost or glibc-dns-testing\n", *recipe)
		os.Exit(2)
	}
	o.Recipe.Files = append(o.Recipe.Files, extra...)
	if (*recipe == "flannel" && o.BinDir == "") || (*recipe == "agnhost" && (*agnhost == "" || *porter == "")) || o.Tag == "" {
		fmt.Fprintln(os.Stderr, "imagebuild: -tag is required, and -bin for flannel, -agnhost and -porter for agnhost")
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
