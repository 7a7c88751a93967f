package daemon

import (
	"strings"
	"testing"

	"github.com/flannelgo/flannel/internal/config"
)

func TestConfigDiffNamesTheChange(t *testing.T) {
	parse := func(s string) *config.Config {
		c, err := config.Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	run := parse(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	for _, tc := range []struct{ cur, want string }{
		{`{"Network":"10.244.0.0/16", "Backend":{"Type":"vxlan"}}`, ""},
		{`{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}`, "10.245.0.0/16"},
		{`{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan"}}`, "SubnetLen 25"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`, `"VNI":2`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, "host-gw"},
	} {
		got := configDiff(run, parse(tc.cur))
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("configDiff to %s = %q, want one naming %q", tc.cur, got, tc.want)
		}
	}
}
