package supportbundle

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// Each secret flannel's inputs can carry, in the form it takes there; the
// name stays, the value goes.
var secrets = []struct{ in, secret, keep string }{
	{`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"Zmxhbm5lbC1nby10ZXN0LXByZS1zaGFyZWQta2V5ISE="}}`, "Zmxhbm5lbC1nby10ZXN0LXByZS1zaGFyZWQta2V5ISE=", `"PSK":"REDACTED"`},
	{`"Backend": {"Type": "ipsec", "psk": "a-very-long-ipsec-psk-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"}`, "a-very-long-ipsec-psk", `"psk": "REDACTED"`},
	{`interface: flannel-wg
  public key: 8bQ8mY3m4oV2A1Wq0d0n1uq2VfKQ0P7Gx6oM0yW9Nn0=
  private key: sA0GdAq3qP5r6t7Y8u9I0o1P2a3S4d5F6g7H8j9K0l4=
  preshared key: cHJlc2hhcmVkLWtleS1vZi10aGUtdGVzdC0wMTIzNDU=`, "sA0GdAq3qP5r6t7Y8u9I0o1P2a3S4d5F6g7H8j9K0l4=", "private key: REDACTED"},
	{"  preshared key: cHJlc2hhcmVkLWtleS1vZi10aGUtdGVzdC0wMTIzNDU=", "cHJlc2hhcmVkLWtleS1vZi10aGUtdGVzdC0wMTIzNDU=", "preshared key: REDACTED"},
	{"/opt/bin/flanneld --etcd-endpoints=https://198.51.100.1:2379 --etcd-password=hunter2-secret --ip-masq", "hunter2", "--etcd-password=REDACTED --ip-masq"},
	{"FLANNELD_ETCD_PASSWORD=hunter3", "hunter3", "FLANNELD_ETCD_PASSWORD=REDACTED"},
	{"users:\n- name: flannel\n  user:\n    token: abc.def-ghi\n    client-key-data: LS0tLS1CRUdJTg==", "abc.def-ghi", "token: REDACTED"},
	{"client-key-data: LS0tLS1CRUdJTg==", "LS0tLS1CRUdJTg==", "client-key-data: REDACTED"},
	{`I1205 GET https://10.96.0.1:443/api/v1/nodes Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl`, "c2lnbmF0dXJl", "Bearer REDACTED"},
	{`seen eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl in a log`, "eyJzdWIiOiJzeXN0ZW0ifQ", "seen REDACTED in a log"},
	{"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----\n", "MHcCAQEEIBkg", "-----REDACTED PRIVATE KEY-----"},
}

func TestRedact(t *testing.T) {
	for _, s := range secrets {
		got := string(Redact([]byte(s.in)))
		if strings.Contains(got, s.secret) || !strings.Contains(got, s.keep) {
			t.Errorf("Redact(%q) = %q: want %q kept and %q gone", s.in, got, s.keep, s.secret)
		}
	}
	// What a maintainer needs stays: addresses, MACs, public keys in leases.
	for _, plain := range []string{
		"10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
		`{"PublicIP":"198.51.100.12","BackendType":"wireguard","BackendData":{"PublicKey":"8bQ8mY3m4oV2A1Wq0d0n1uq2VfKQ0P7Gx6oM0yW9Nn0="}}`,
		"FLANNEL_NETWORK=10.244.0.0/16",
	} {
		if got := string(Redact([]byte(plain))); got != plain {
			t.Errorf("Redact changed %q to %q", plain, got)
		}
	}
}

// The archive holds every item under one directory, each redacted; a
// command that fails leaves its error.
func TestWriteRedactsEveryItem(t *testing.T) {
	run := func(_ context.Context, argv ...string) ([]byte, error) {
		if argv[0] == "wg" {
			return []byte("wg: not found"), errors.New("exit status 127")
		}
		return []byte(strings.Join(argv, " ") + "\n"), nil
	}
	items := RunCommands(context.Background(), run, Commands)
	for i, s := range secrets {
		items = append(items, Item{Name: "secret" + string(rune('a'+i)) + ".txt", Data: []byte(s.in)})
	}
	var buf bytes.Buffer
	if err := Write(&buf, "flannel-bundle-n1", items, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, &buf)
	if len(files) != len(items) {
		t.Errorf("%d files in the archive, want %d", len(files), len(items))
	}
	for _, want := range []string{"flannel-bundle-n1/kernel/fdb.txt", "flannel-bundle-n1/rules/nft-ruleset.txt", "flannel-bundle-n1/kernel/neighbours.txt"} {
		if _, ok := files[want]; !ok {
			t.Errorf("no %s in %v", want, keys(files))
		}
	}
	if wg := files["flannel-bundle-n1/kernel/wireguard.txt"]; !strings.Contains(wg, "exit status 127") {
		t.Errorf("failed command's file %q does not hold its error", wg)
	}
	for name, data := range files {
		for _, s := range secrets {
			if strings.Contains(data, s.secret) {
				t.Errorf("%s holds the secret %q", name, s.secret)
			}
		}
	}
}

func readArchive(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	files, err := Read(r)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
