package sshgw

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covedev/cove/internal/connlimit"
	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/crypto/ssh"
)

// startLimitedGateway serves a second gateway, with cfg's limits, over
// the test environment's CA, resolver and agents.
func startLimitedGateway(t *testing.T, e *testEnv, cfg Config) (*Gateway, string) {
	t.Helper()
	cfg.HostSigner = e.host
	cfg.Resolver = e.resolver
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	gw := NewGateway(cfg)
	gw.SetUserCA(e.ca.PublicKey())
	hc, err := e.ca.SignHostCert(e.host.PublicKey(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gw.SetHostCertificate(hc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return gw, ln.Addr().String()
}

// rawConn opens a TCP connection from the loopback address from (e.g.
// 127.0.0.2, another source) that never speaks SSH.
func rawConn(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: testutil.Patience(t)}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(testutil.Patience(t))) // a hang fails instead of blocking the test run
	return c
}

// banner reads what the gateway sends first: its version line if it took
// the connection, EOF if it closed it at once.
func banner(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	return bufio.NewReader(c).ReadString('\n')
}

// runOn runs a command through an authenticated client.
func runOn(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	defer s.Close()
	out, err := s.Output(cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return string(out)
}

// TestMaxStartups floods the gateway with TCP connections that never
// authenticate: beyond the per-source and total caps new ones are closed
// at once (EOF before any SSH banner); a session that authenticated before
// the flood keeps working during it, and new sessions work once the flood
// goes away.
func TestMaxStartups(t *testing.T) {
	e := newTestEnv(t)
	const total, perSource = 3, 2
	gw, addr := startLimitedGateway(t, e, Config{MaxStartups: total, MaxStartupsPerSource: perSource})
	dial := func() (*ssh.Client, error) {
		s, cert := e.userCert(t, "env-a", "alice")
		cfg := ClientConfig(s, cert, e.ca.PublicKey())
		cfg.Timeout = testutil.Patience(t)
		return ssh.Dial("tcp", addr, cfg)
	}
	before, err := dial()
	if err != nil {
		t.Fatalf("session before the flood: %v", err)
	}
	defer before.Close()
	// The client learns of its success before the gateway's handshake
	// returns: wait for the gateway to take the connection off its count.
	ctx := testutil.Context(t)
	if err := gw.WaitStartups(ctx, func(s connlimit.Stats) bool { return s.Pending == 0 }); err != nil {
		t.Fatalf("an authenticated session still counts as a startup: %+v", gw.Startups())
	}

	var flood []net.Conn
	for range perSource {
		c := rawConn(t, addr, "127.0.0.1")
		if b, err := banner(t, c); err != nil || !strings.HasPrefix(b, "SSH-2.0-") {
			t.Fatalf("connection within the caps: %q %v", b, err)
		}
		flood = append(flood, c)
	}
	over := rawConn(t, addr, "127.0.0.1")
	if b, err := banner(t, over); !errors.Is(err, io.EOF) || b != "" {
		t.Fatalf("connection beyond the per-source cap: got %q %v, want EOF at once", b, err)
	}
	// Another source still gets in, up to the total cap.
	other := rawConn(t, addr, "127.0.0.2")
	if b, err := banner(t, other); err != nil || !strings.HasPrefix(b, "SSH-2.0-") {
		t.Fatalf("connection from another source: %q %v", b, err)
	}
	flood = append(flood, other)
	third := rawConn(t, addr, "127.0.0.3")
	if b, err := banner(t, third); !errors.Is(err, io.EOF) || b != "" {
		t.Fatalf("connection beyond the total cap: got %q %v, want EOF at once", b, err)
	}
	if st := gw.Startups(); st.Pending != total || st.Refused != 2 {
		t.Fatalf("gateway reports %+v, want %d pending and 2 refused", st, total)
	}
	// New authentications are refused now too...
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("a new connection got in beyond the cap")
	}
	// ...but the session that got in before works.
	if out := runOn(t, before, "whoami-agent"); !strings.HasPrefix(out, "env-a ") {
		t.Fatalf("session during the flood: %q", out)
	}

	for _, c := range flood {
		c.Close()
	}
	if err := gw.WaitStartups(ctx, func(s connlimit.Stats) bool { return s.Pending == 0 }); err != nil {
		t.Fatalf("startups not released after the flood went away: %+v", gw.Startups())
	}
	after, err := dial()
	if err != nil {
		t.Fatalf("session after the flood: %v", err)
	}
	defer after.Close()
	if out := runOn(t, after, "whoami-agent"); !strings.HasPrefix(out, "env-a ") {
		t.Fatalf("session after the flood: %q", out)
	}
}

// stallingSigner signs only once released, like the review's F1 client
// whose signature took 8 s. It gives up (failing the signature) when the
// connection it runs on is closed.
type stallingSigner struct {
	ssh.Signer
	entered chan struct{}
	closed  <-chan struct{}
	once    sync.Once
	cutOff  atomic.Bool // the connection closed while the signature was pending
}

func (s *stallingSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.closed:
		s.cutOff.Store(true)
		return nil, errors.New("connection closed while signing")
	case <-time.After(2 * time.Minute):
		return nil, errors.New("never cut off")
	}
}

// closeWatch notes when the peer closes the connection.
type closeWatch struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *closeWatch) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { close(c.closed) })
	}
	return n, err
}

// TestGraceTimeBoundsStalledSignature: a client that completes the key
// exchange and then stalls its signature is cut off by the gateway after
// the grace time (HandshakeTimeout): the connection is closed while the
// signature is still pending, it never authenticates, and its startup slot
// is freed.
func TestGraceTimeBoundsStalledSignature(t *testing.T) {
	e := newTestEnv(t)
	gw, addr := startLimitedGateway(t, e, Config{HandshakeTimeout: 2 * time.Second})
	key, cert := e.userCert(t, "env-a", "alice")
	nc, err := net.DialTimeout("tcp", addr, testutil.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	cw := &closeWatch{Conn: nc, closed: make(chan struct{})}
	signer := &stallingSigner{Signer: key, entered: make(chan struct{}), closed: cw.closed}
	cfg := ClientConfig(signer, cert, e.ca.PublicKey())
	done := make(chan error, 1)
	go func() {
		c, _, _, err := ssh.NewClientConn(cw, addr, cfg)
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case <-signer.entered:
	case err := <-done:
		t.Fatalf("handshake ended before the client was asked to sign: %v", err)
	}
	if err := <-done; err == nil {
		t.Fatal("a client that never signed got in")
	}
	if !signer.cutOff.Load() {
		t.Fatal("the gateway did not close the connection while the signature was pending")
	}
	if err := gw.WaitStartups(testutil.Context(t), func(s connlimit.Stats) bool { return s.Pending == 0 }); err != nil {
		t.Fatalf("stalled connection still holds a startup slot: %+v", gw.Startups())
	}
}
