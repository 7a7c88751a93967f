package deploy

import (
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/imagebuild"
)

// TestDockerfileAndImageBuilderAgree keeps deploy/Dockerfile (for people
// with Docker) and scripts/image.sh (internal/imagebuild, for machines
// without) describing the same image: the same files at the same paths,
// the same Debian packages, the iptables wrapper installed in front of the
// same commands.
func TestDockerfileAndImageBuilderAgree(t *testing.T) {
	var copied, packages []string
	installsWrapper := false
	for _, in := range dockerfile(t) {
		switch in.op {
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) < 2 || f[0] == "go.mod" || f[0] == "." {
				continue // the builder stage's sources
			}
			dst := f[len(f)-1]
			if strings.HasSuffix(dst, "/") {
				dst += path.Base(f[len(f)-2])
			}
			copied = append(copied, dst)
		case "RUN":
			if m := regexp.MustCompile(`apt-get install (?:-\S+ )*(.*?)(?: &&|$)`).FindStringSubmatch(in.args); m != nil {
				packages = append(packages, strings.Fields(m[1])...)
			}
			if in.args == "/usr/sbin/iptables-wrapper install" {
				installsWrapper = true
			}
		}
	}
	var layout []string
	for _, f := range imagebuild.Layout() {
		layout = append(layout, f.Path)
	}
	slices.Sort(copied)
	slices.Sort(layout)
	if !slices.Equal(copied, layout) {
		t.Errorf("the Dockerfile copies to %q, the image builder (internal/imagebuild.Layout) to %q", copied, layout)
	}
	want := imagebuild.Packages()
	slices.Sort(packages)
	slices.Sort(want)
	if !slices.Equal(packages, want) {
		t.Errorf("the Dockerfile installs %q, the image builder (internal/imagebuild.Packages) %q", packages, want)
	}
	if !installsWrapper {
		t.Error("the Dockerfile does not RUN /usr/sbin/iptables-wrapper install, which the image builder's links stand for")
	}
}

// TestWrapperWrapsWhatTheBuilderLinks: the image builder links the
// commands the wrapper's own install would, and the wrapper accepts being
// called as each of them.
func TestWrapperWrapsWhatTheBuilderLinks(t *testing.T) {
	m := regexp.MustCompile(`(?m)^commands="([^"]*)"$`).FindSubmatch(readFile(t, "image/iptables-wrapper"))
	if m == nil {
		t.Fatal(`deploy/image/iptables-wrapper has no commands="..." line`)
	}
	if got, want := strings.Fields(string(m[1])), imagebuild.WrappedCommands(); !slices.Equal(got, want) {
		t.Errorf("the wrapper wraps %q, the image builder links %q", got, want)
	}
}
