package sshgw

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/usererr"
	"golang.org/x/crypto/ssh"
)

func TestLoadOrCreateCA(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "ca_key")
	ca, err := LoadOrCreateCA(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte("-----BEGIN OPENSSH PRIVATE KEY-----")) {
		t.Fatalf("not an OpenSSH PEM key: %q", data[:40])
	}
	if ca.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("key type %s", ca.PublicKey().Type())
	}
	line := ca.AuthorizedKey()
	if !strings.HasPrefix(line, "ssh-ed25519 AAAA") || strings.ContainsAny(line, "\n") {
		t.Fatalf("AuthorizedKey = %q", line)
	}
	parsed, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || !bytes.Equal(parsed.Marshal(), ca.PublicKey().Marshal()) {
		t.Fatalf("AuthorizedKey does not round-trip: %v", err)
	}

	// Loading again returns the same key.
	again, err := LoadOrCreateCA(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.PublicKey().Marshal(), ca.PublicKey().Marshal()) {
		t.Fatal("reloaded CA has a different key")
	}

	// Too permissive, or garbage: refused with a message for the operator.
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateCA(path); err == nil {
		t.Fatal("world-readable CA key accepted")
	} else if _, ok := usererr.Message(err); !ok {
		t.Fatalf("not a user error: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := LoadOrCreateCA(bad); err == nil {
		t.Fatal("garbage CA key accepted")
	}
}

func TestSignUserCert(t *testing.T) {
	ca, err := LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	ca.now = func() time.Time { return now }
	pub := newSigner(t).PublicKey()
	cert, err := ca.SignUserCert(pub, "env-1", "user-9", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.CertType != ssh.UserCert {
		t.Fatalf("type %d", cert.CertType)
	}
	if len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != "env-1" {
		t.Fatalf("principals %q", cert.ValidPrincipals)
	}
	if cert.KeyId != "cove:owner=user-9:env=env-1" {
		t.Fatalf("key id %q", cert.KeyId)
	}
	if cert.Extensions[OwnerExtension] != "user-9" {
		t.Fatalf("extensions %v", cert.Extensions)
	}
	for _, e := range []string{"permit-pty", "permit-port-forwarding", "permit-user-rc"} {
		if _, ok := cert.Extensions[e]; !ok {
			t.Errorf("missing extension %s", e)
		}
	}
	if len(cert.CriticalOptions) != 0 {
		t.Errorf("critical options %v", cert.CriticalOptions)
	}
	if cert.ValidAfter != uint64(now.Add(-time.Minute).Unix()) || cert.ValidBefore != uint64(now.Add(2*time.Hour).Unix()) {
		t.Fatalf("validity %d..%d", cert.ValidAfter, cert.ValidBefore)
	}
	if !bytes.Equal(cert.Key.Marshal(), pub.Marshal()) || !bytes.Equal(cert.SignatureKey.Marshal(), ca.PublicKey().Marshal()) {
		t.Fatal("wrong key or signature key")
	}
	checker := ssh.CertChecker{Clock: func() time.Time { return now }}
	if err := checker.CheckCert("env-1", cert); err != nil {
		t.Fatalf("signature: %v", err)
	}
	other, _ := ca.SignUserCert(pub, "env-1", "user-9", time.Hour)
	if other.Serial == cert.Serial {
		t.Fatal("serials are not random")
	}

	// The certificate round-trips through the authorized_keys format that
	// OpenSSH reads (key-cert.pub).
	parsed, _, _, _, err := ssh.ParseAuthorizedKey(ssh.MarshalAuthorizedKey(cert))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parsed.(*ssh.Certificate); !ok {
		t.Fatal("parsed key is not a certificate")
	}

	for name, f := range map[string]func() error{
		"no env":   func() error { _, err := ca.SignUserCert(pub, "", "u", time.Hour); return err },
		"no owner": func() error { _, err := ca.SignUserCert(pub, "e", "", time.Hour); return err },
		"no ttl":   func() error { _, err := ca.SignUserCert(pub, "e", "u", 0); return err },
		"no key":   func() error { _, err := ca.SignUserCert(nil, "e", "u", time.Hour); return err },
		"cert key": func() error { _, err := ca.SignUserCert(cert, "e", "u", time.Hour); return err },
	} {
		if f() == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestSignHostCert(t *testing.T) {
	ca, err := LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	host := newSigner(t)
	cert, err := ca.SignHostCert(host.PublicKey(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.CertType != ssh.HostCert || len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != HostPrincipal {
		t.Fatalf("type %d principals %q", cert.CertType, cert.ValidPrincipals)
	}
	if err := HostKeyCallback(ca.PublicKey(), nil)("127.0.0.1:22", nil, cert); err != nil {
		t.Fatalf("host certificate rejected: %v", err)
	}
}
