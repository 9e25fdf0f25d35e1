package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServerTLS: `cove server --tls-cert/--tls-key` serves the API over
// HTTPS, and the CLI logs in to it when it trusts the certificate.
func TestServerTLS(t *testing.T) {
	cove := buildCove(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certPath, keyPath)
	addr := freePort(t)
	srv := &daemon{t: t, bin: cove, log: filepath.Join(dir, "server.log"), args: []string{
		"server", "--data-dir", filepath.Join(dir, "data"), "--listen", addr,
		"--tls-cert", certPath, "--tls-key", keyPath, "--bootstrap-user", "alice"}}
	srv.start()
	t.Cleanup(srv.stop)
	var token string
	re := regexp.MustCompile(`--token (cove_pat_\S+)`)
	waitFor(t, "the bootstrap token", func() bool {
		m := re.FindStringSubmatch(srv.logTail())
		if m != nil {
			token = m[1]
		}
		return m != nil
	})
	if !strings.Contains(srv.logTail(), "https://"+addr) {
		t.Fatalf("server does not say it serves https:\n%s", srv.logTail())
	}
	u := &env{t: t, cove: cove, cfgDir: filepath.Join(dir, "cli")}
	// Without trusting the certificate, login fails.
	if _, errOut, code := u.run("login", "--server", "https://"+addr, "--token", token); code == 0 || !strings.Contains(errOut, "certificate") {
		t.Fatalf("login with an untrusted certificate: exit %d %q", code, errOut)
	}
	t.Setenv("SSL_CERT_FILE", certPath)
	u.must("login", "--server", "https://"+addr, "--token", token)
	if out := u.must("whoami"); !strings.Contains(out, "alice (owner) on https://"+addr) {
		t.Fatalf("whoami over https: %q", out)
	}
}

func writeSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cove test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}
