package etcd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// --etcd-prefix names the same keys as upstream's path.Join(prefix, ...):
// cleaned, and with a leading slash only where the operator wrote one.
func TestPrefixJoinedAsUpstream(t *testing.T) {
	for prefix, want := range map[string]string{
		"/coreos.com/network":   "/coreos.com/network/config",
		"/coreos.com/network/":  "/coreos.com/network/config",
		"coreos.com/network":    "coreos.com/network/config",
		"//example.com//net///": "/example.com/net/config",
		"/":                     "/config",
	} {
		m, err := New(Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if got := m.configKey(); got != want {
			t.Errorf("--etcd-prefix %q: config key %q, want %q", prefix, got, want)
		}
		if got, wantSub := m.subnetsPrefix(), want[:len(want)-len("config")]+"subnets/"; got != wantSub {
			t.Errorf("--etcd-prefix %q: subnets under %q, want %q", prefix, got, wantSub)
		}
	}
}

// TLS exactly when upstream uses it: key and certificate both given; a CA
// alone, or half a key pair, means plain connections. TLS 1.2 at least.
func TestClientTLSAsUpstream(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeKeyPair(t, dir)
	for _, tc := range []struct {
		name    string
		opts    Options
		wantTLS bool
	}{
		{"nothing", Options{}, false},
		{"CA only", Options{CAFile: cert}, false},
		{"key only", Options{KeyFile: key, CAFile: cert}, false},
		{"cert only", Options{CertFile: cert}, false},
		{"key and cert", Options{KeyFile: key, CertFile: cert}, true},
		{"key, cert and CA", Options{KeyFile: key, CertFile: cert, CAFile: cert}, true},
	} {
		cfg, err := clientTLS(tc.opts)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if (cfg != nil) != tc.wantTLS {
			t.Errorf("%s: TLS config %v, want TLS %v", tc.name, cfg != nil, tc.wantTLS)
			continue
		}
		if cfg != nil && cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("%s: MinVersion %#x, want TLS 1.2", tc.name, cfg.MinVersion)
		}
	}
}

// writeKeyPair writes a self-signed certificate and its key.
func writeKeyPair(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flanneld"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
