package sshgw

import (
	"crypto/rand"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestCertificateIsScopedToOneEnvironment(t *testing.T) {
	e := newTestEnv(t)
	// The SSH user name is ignored: the certificate's principal decides.
	s, cert := e.userCert(t, "env-a", "alice")
	cfg := ClientConfig(s, cert, e.ca.PublicKey())
	cfg.User = "env-b"
	c, err := ssh.Dial("tcp", e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, _ := c.NewSession()
	out, err := sess.Output("whoami-agent")
	if err != nil || string(out) != "env-a user=cove\n" {
		t.Fatalf("env-a cert reached %q (%v)", out, err)
	}

	c = e.mustDial(t, "env-b", "bob")
	sess, _ = c.NewSession()
	out, err = sess.Output("whoami-agent")
	if err != nil || string(out) != "env-b user=cove\n" {
		t.Fatalf("env-b cert reached %q (%v)", out, err)
	}
}

func TestAuthenticationRefusals(t *testing.T) {
	e := newTestEnv(t)
	otherCA, err := LoadOrCreateCA(filepath.Join(t.TempDir(), "other-ca"))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(t *testing.T, mutate func(*ssh.Certificate)) (ssh.Signer, *ssh.Certificate) {
		s := newSigner(t)
		cert, err := e.ca.SignUserCert(s.PublicKey(), "env-a", "alice", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		mutate(cert)
		if err := cert.SignCert(rand.Reader, e.ca.signer); err != nil {
			t.Fatal(err)
		}
		return s, cert
	}
	tests := []struct {
		name string
		cred func(t *testing.T) (ssh.Signer, *ssh.Certificate)
		skew time.Duration
	}{
		{name: "expired", skew: 2 * time.Hour, cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			return e.userCert(t, "env-a", "alice")
		}},
		{name: "not yet valid", skew: -time.Hour, cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			return e.userCert(t, "env-a", "alice")
		}},
		{name: "other CA", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			s := newSigner(t)
			cert, err := otherCA.SignUserCert(s.PublicKey(), "env-a", "alice", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return s, cert
		}},
		{name: "owner mismatch", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			return e.userCert(t, "env-b", "alice")
		}},
		{name: "unknown environment", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			return e.userCert(t, "env-c", "alice")
		}},
		{name: "host certificate", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			s := newSigner(t)
			cert, err := e.ca.SignHostCert(s.PublicKey(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return s, cert
		}},
		{name: "two principals", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			return sign(t, func(c *ssh.Certificate) { c.ValidPrincipals = []string{"env-a", "env-b"} })
		}},
		{name: "no owner", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			return sign(t, func(c *ssh.Certificate) { delete(c.Extensions, OwnerExtension) })
		}},
		{name: "critical option", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			return sign(t, func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"force-command": "true"} })
		}},
		{name: "tampered", cred: func(t *testing.T) (ssh.Signer, *ssh.Certificate) {
			s, cert := e.userCert(t, "env-a", "alice")
			cert.ValidPrincipals = []string{"env-b"}
			cert.Extensions[OwnerExtension] = "bob"
			return s, cert
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.skew.Store(int64(tt.skew))
			defer e.skew.Store(0)
			s, cert := tt.cred(t)
			c, err := e.dial(t, s, cert)
			if err == nil {
				c.Close()
				t.Fatal("connection accepted")
			}
			if !strings.Contains(err.Error(), "unable to authenticate") {
				t.Fatalf("want an authentication failure, got %v", err)
			}
		})
	}

	t.Run("plain key", func(t *testing.T) {
		s := newSigner(t)
		cfg := ClientConfig(s, nil, e.ca.PublicKey())
		cfg.Auth = []ssh.AuthMethod{ssh.PublicKeys(s)}
		c, err := ssh.Dial("tcp", e.addr, cfg)
		if err == nil {
			c.Close()
			t.Fatal("plain key accepted")
		}
	})

	t.Run("user CA changes at runtime", func(t *testing.T) {
		s, cert := e.userCert(t, "env-a", "alice")
		e.gw.SetUserCA(otherCA.PublicKey())
		if c, err := e.dial(t, s, cert); err == nil {
			c.Close()
			t.Fatal("accepted after its CA was removed")
		}
		e.gw.SetUserCA(otherCA.PublicKey(), e.ca.PublicKey())
		c, err := e.dial(t, s, cert)
		if err != nil {
			t.Fatalf("refused after its CA was added back: %v", err)
		}
		c.Close()
	})
}

func TestCertificatePermissions(t *testing.T) {
	e := newTestEnv(t)
	s := newSigner(t)
	cert, err := e.ca.SignUserCert(s.PublicKey(), "env-a", "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	delete(cert.Extensions, "permit-port-forwarding")
	delete(cert.Extensions, "permit-pty")
	if err := cert.SignCert(rand.Reader, e.ca.signer); err != nil {
		t.Fatal(err)
	}
	c, err := e.dial(t, s, cert)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Dial("tcp", startEchoServer(t)); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Fatalf("direct-tcpip without permit-port-forwarding: %v", err)
	}
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatal("tcpip-forward without permit-port-forwarding succeeded")
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Fatal("pty-req without permit-pty succeeded")
	}
	// The session itself still works.
	if out, err := sess.Output("echo fine"); err != nil || string(out) != "fine\n" {
		t.Fatalf("exec: %q %v", out, err)
	}
}

func TestHostCertificateVerification(t *testing.T) {
	e := newTestEnv(t)
	s, cert := e.userCert(t, "env-a", "alice")
	otherCA, err := LoadOrCreateCA(filepath.Join(t.TempDir(), "other-ca"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ssh.Dial("tcp", e.addr, ClientConfig(s, cert, otherCA.PublicKey())); err == nil {
		c.Close()
		t.Fatal("host certificate from another CA accepted")
	} else if !strings.Contains(err.Error(), "unknown CA") {
		t.Fatalf("wrong CA: %v", err)
	}

	// A certificate for another key is ignored: the plain key is offered,
	// which the client refuses.
	wrong, err := e.ca.SignHostCert(newSigner(t).PublicKey(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.gw.SetHostCertificate(wrong)
	if c, err := ssh.Dial("tcp", e.addr, ClientConfig(s, cert, e.ca.PublicKey())); err == nil {
		c.Close()
		t.Fatal("gateway without a host certificate accepted")
	}
	plain := ClientConfig(s, cert, e.ca.PublicKey())
	plain.HostKeyAlgorithms = nil
	plain.HostKeyCallback = ssh.FixedHostKey(e.host.PublicKey())
	c, err := ssh.Dial("tcp", e.addr, plain)
	if err != nil {
		t.Fatalf("plain host key: %v", err)
	}
	c.Close()

	// A host certificate's principal and validity are checked.
	expired := HostKeyCallback(e.ca.PublicKey(), func() time.Time { return time.Now().Add(2 * time.Hour) })
	hc, _ := e.ca.SignHostCert(e.host.PublicKey(), time.Hour)
	if err := expired("gw", nil, hc); err == nil {
		t.Fatal("expired host certificate accepted")
	}
	if err := HostKeyCallback(e.ca.PublicKey(), nil)("gw", nil, hc); err != nil {
		t.Fatalf("valid host certificate refused: %v", err)
	}
	uc, _ := e.ca.SignUserCert(e.host.PublicKey(), HostPrincipal, "alice", time.Hour)
	if err := HostKeyCallback(e.ca.PublicKey(), nil)("gw", nil, uc); err == nil {
		t.Fatal("user certificate accepted as host certificate")
	}

	e.gw.SetHostCertificate(hc)
	c, err = ssh.Dial("tcp", e.addr, ClientConfig(s, cert, e.ca.PublicKey()))
	if err != nil {
		t.Fatalf("after restoring the host certificate: %v", err)
	}
	c.Close()
}

func TestAgentUnreachable(t *testing.T) {
	e := newTestEnv(t)
	e.resolver.set("env-down", Target{OwnerID: "alice", AgentSocket: filepath.Join(t.TempDir(), "nope.sock"), AgentSigner: newSigner(t), AgentHostKey: newSigner(t).PublicKey()})
	c := e.mustDial(t, "env-down", "alice")
	_, err := c.NewSession()
	if err == nil || !strings.Contains(err.Error(), "env-down is not reachable") {
		t.Fatalf("NewSession = %v", err)
	}
}

// hookSigner runs hook before every signature: the client decides when the
// gateway gets it.
type hookSigner struct {
	ssh.Signer
	hook func()
}

func (h hookSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	h.hook()
	return h.Signer.Sign(r, data)
}

// TestResolvedAgainAfterAuthentication is the review's F1 reproduction 2 at
// the gateway: while the client stalls its signature, what the
// environment's name leads to changes (here: to another owner's agent).
// The gateway resolves again after authentication and refuses, instead of
// proxying to whatever the first check saw.
func TestResolvedAgainAfterAuthentication(t *testing.T) {
	e := newTestEnv(t)
	s, cert := e.userCert(t, "env-a", "alice")
	swapped := false
	stall := hookSigner{Signer: s, hook: func() {
		if !swapped {
			swapped = true
			e.resolver.set("env-a", e.agents["env-b"].target("bob"))
		}
	}}
	c, err := e.dial(t, stall, cert)
	if !swapped {
		t.Fatal("the client never signed")
	}
	if err == nil {
		defer c.Close()
		out, err := run(c, "whoami-agent")
		if strings.Contains(out, "env-b") {
			t.Fatalf("alice's session reached bob's agent: %q", out)
		}
		if err == nil {
			t.Fatalf("session after the swap succeeded: %q", out)
		}
	}
	// The same swap, pointed at bob's socket while keeping alice's keys:
	// the pinned host key refuses bob's agent.
	a, b := e.agents["env-a"], e.agents["env-b"]
	tgt := a.target("alice")
	tgt.AgentSocket = b.socket
	e.resolver.set("env-a", tgt)
	c2 := e.mustDial(t, "env-a", "alice")
	if out, err := run(c2, "whoami-agent"); err == nil || strings.Contains(out, "env-b") {
		t.Fatalf("session with alice's keys on bob's socket: %q, %v", out, err)
	}
}

// run runs cmd in a new session and returns its output.
func run(c *ssh.Client, cmd string) (string, error) {
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	out, err := sess.CombinedOutput(cmd)
	return string(out), err
}
