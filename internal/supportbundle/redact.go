package supportbundle

import "regexp"

// secretWords are the names under which flannel's inputs carry secrets:
// the WireGuard and IPsec PSKs of net-conf.json, WireGuard keys (`wg`
// output, the key file's name), etcd passwords, kubeconfig and
// ServiceAccount tokens, client keys. Matching too much (a log line about
// "tokens") costs a word of the bundle; matching too little leaks.
const secretWords = `psk|password|passwd|secret|token|private[ _-]?key|preshared[ _-]?key|client-key-data`

// Redacted replaces every secret value.
const Redacted = "REDACTED"

var redactions = []struct {
	re   *regexp.Regexp
	with string
}{
	// JSON: "PSK": "…", "PrivateKey": "…" (any key containing a secret word).
	{regexp.MustCompile(`(?i)("[\w-]*(?:` + secretWords + `)[\w-]*"\s*:\s*")((?:[^"\\]|\\.)*)(")`), "${1}" + Redacted + "${3}"},
	// key=value and key: value: flags (--etcd-password=…), environment
	// (FLANNELD_ETCD_PASSWORD=…), YAML (token: …), `wg` (private key: …).
	{regexp.MustCompile(`(?i)\b([\w.-]*(?:` + secretWords + `)[\w.-]*)(\s*[:=]\s*)("?)([^\s"',}]+)`), "${1}${2}${3}" + Redacted},
	// HTTP authorisation headers, as client-go logs them at high -v.
	{regexp.MustCompile(`(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+`), "${1}" + Redacted},
	// JSON Web Tokens wherever they appear (ServiceAccount tokens).
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`), Redacted},
	// PEM private keys (TLS keys of etcd or the API server).
	{regexp.MustCompile(`(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----`), "-----" + Redacted + " PRIVATE KEY-----"},
}

// Redact returns data with every secret value replaced by REDACTED, the
// names kept so the reader sees that a value was there.
func Redact(data []byte) []byte {
	for _, r := range redactions {
		data = r.re.ReplaceAll(data, []byte(r.with))
	}
	return data
}
