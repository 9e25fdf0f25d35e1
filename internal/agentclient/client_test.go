package agentclient

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent"
	"golang.org/x/crypto/ssh"
)

// testAgent is a real agent serving on a temp socket in this process.
type testAgent struct {
	sock     string
	authKeys string
	hostKey  string // host key file
	signer   ssh.Signer
	host     ssh.Signer
	stop     func()
	// listener, if set, is handed to the agent as an inherited descriptor
	// (as the runner does) instead of the agent listening on sock itself.
	listener *os.File
}

// ep is the endpoint that reaches this agent.
func (a *testAgent) ep() Endpoint {
	return Endpoint{Socket: a.sock, Signer: a.signer, HostKey: a.host.PublicKey()}
}

// writeHostKey gives the agent a host key of its own, in a file.
func writeHostKey(t *testing.T, path string) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestAgent(t *testing.T) *testAgent {
	t.Helper()
	dir := t.TempDir()
	a := &testAgent{sock: filepath.Join(dir, "agent.sock"), authKeys: filepath.Join(dir, "authorized_keys"), hostKey: filepath.Join(dir, "host_key"), signer: newSigner(t)}
	if err := os.WriteFile(a.authKeys, ssh.MarshalAuthorizedKey(a.signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	a.host = writeHostKey(t, a.hostKey)
	a.start(t)
	return a
}

// start runs the agent until stop or the end of the test.
func (a *testAgent) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := agent.Config{SocketPath: a.sock, AuthorizedKeysPath: a.authKeys, HostKeyPath: a.hostKey}
	if a.listener != nil {
		fd, err := syscall.Dup(int(a.listener.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		cfg.ListenFD = fd
	}
	go func() { done <- agent.Run(ctx, cfg) }()
	stopped := false
	a.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("agent did not stop")
		}
	}
	t.Cleanup(a.stop)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", a.sock); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			t.Fatalf("agent exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("agent socket never appeared")
}

func dial(t *testing.T, a *testAgent) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, a.ep())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func hasPort(ps []Port, port int) bool {
	return slices.ContainsFunc(ps, func(p Port) bool { return p.Port == port })
}

func TestWatchPorts(t *testing.T) {
	a := newTestAgent(t)
	c := dial(t, a)

	updates := make(chan []Port, 100)
	ctx, cancel := context.WithCancel(context.Background())
	watchErr := make(chan error, 1)
	go func() { watchErr <- c.WatchPorts(ctx, func(ps []Port) { updates <- ps }) }()
	wait := func(what string, cond func([]Port) bool) {
		t.Helper()
		timeout := time.After(time.Second)
		for {
			select {
			case ps := <-updates:
				if cond(ps) {
					return
				}
			case err := <-watchErr:
				t.Fatalf("WatchPorts returned while waiting for %s: %v", what, err)
			case <-timeout:
				t.Fatalf("no update with %s within 1s", what)
			}
		}
	}
	wait("the initial list", func([]Port) bool { return true })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	wait("the listener", func(ps []Port) bool { return hasPort(ps, port) })
	ln.Close()
	wait("the listener gone", func(ps []Port) bool { return !hasPort(ps, port) })

	cancel()
	select {
	case err := <-watchErr:
		if err != context.Canceled {
			t.Errorf("WatchPorts after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchPorts did not return after cancel")
	}
	// The connection is still usable.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	got := make(chan []Port, 1)
	go func() {
		_ = c.WatchPorts(ctx2, func(ps []Port) {
			select {
			case got <- ps:
			default:
			}
		})
	}()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("second watch on the same connection got nothing")
	}

	// The watch ends with an error when the agent goes away.
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	watchErr = make(chan error, 1)
	go func() { watchErr <- c.WatchPorts(ctx3, func([]Port) {}) }()
	time.Sleep(100 * time.Millisecond)
	a.stop()
	select {
	case err := <-watchErr:
		if err == nil || err == context.Canceled {
			t.Errorf("WatchPorts after agent stop: %v, want a stream error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchPorts did not return after the agent stopped")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the agent stopped")
	}
}

func TestDialTCP(t *testing.T) {
	a := newTestAgent(t)
	c := dial(t, a)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(conn, conn); conn.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.DialTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := []byte("hello through the agent")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != string(msg) {
		t.Errorf("echo %q, want %q", buf, msg)
	}

	// A closed port is an error, not a hang.
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l2.Addr().String()
	l2.Close()
	if conn, err := c.DialTCP(ctx, closed); err == nil {
		conn.Close()
		t.Errorf("DialTCP to closed port %s succeeded", closed)
	}
}

func TestDialRejectsUnknownKey(t *testing.T) {
	a := newTestAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wrong := a.ep()
	wrong.Signer = newSigner(t)
	if c, err := Dial(ctx, wrong); err == nil {
		c.Close()
		t.Fatal("Dial with an unauthorized key succeeded")
	}
	missing := a.ep()
	missing.Socket = filepath.Join(t.TempDir(), "none.sock")
	if _, err := Dial(ctx, missing); err == nil {
		t.Fatal("Dial to a missing socket succeeded")
	}
}

// TestDialRefusesOtherAgent: an environment that makes the runner reach
// another environment's agent (the review's F1) gets nothing: with its own
// client key and pinned host key, the runner's handshake with the wrong
// agent fails both ways.
func TestDialRefusesOtherAgent(t *testing.T) {
	victim := newTestAgent(t)
	attacker := newTestAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The attacker's endpoint, pointed at the victim's socket.
	ep := attacker.ep()
	ep.Socket = victim.sock
	if c, err := Dial(ctx, ep); err == nil {
		c.Close()
		t.Fatal("the attacker's endpoint reached the victim's agent")
	}
	// Even holding the victim's client key, the host key pin refuses an
	// impostor agent.
	ep = victim.ep()
	ep.Socket = attacker.sock
	if c, err := Dial(ctx, ep); err == nil {
		c.Close()
		t.Fatal("connected to an agent whose host key is not pinned")
	}
	if c, err := Dial(ctx, Endpoint{Socket: victim.sock, Signer: victim.signer}); err == nil {
		c.Close()
		t.Fatal("Dial without a pinned host key succeeded")
	}
}

// TestInheritedListener: the agent serves on a socket the runner created
// and handed over as a descriptor.
func TestInheritedListener(t *testing.T) {
	dir := t.TempDir()
	a := &testAgent{sock: filepath.Join(dir, "agent.sock"), authKeys: filepath.Join(dir, "authorized_keys"), hostKey: filepath.Join(dir, "host_key"), signer: newSigner(t)}
	if err := os.WriteFile(a.authKeys, ssh.MarshalAuthorizedKey(a.signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	a.host = writeHostKey(t, a.hostKey)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: a.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	defer f.Close()
	a.listener = f
	a.start(t)
	c := dial(t, a)
	var out strings.Builder
	code, err := c.Exec(ctx10(t), ExecRequest{Shell: "echo inherited", Stdout: &out})
	if err != nil || code != 0 || strings.TrimSpace(out.String()) != "inherited" {
		t.Fatalf("exec over the inherited socket: %d %v %q", code, err, out.String())
	}
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPool(t *testing.T) {
	a := newTestAgent(t)
	p := NewPool()
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Concurrent Gets share one connection.
	clients := make(chan *Client, 5)
	for range 5 {
		go func() {
			c, err := p.Get(ctx, "env1", a.ep())
			if err != nil {
				t.Error(err)
			}
			clients <- c
		}()
	}
	first := <-clients
	for range 4 {
		if c := <-clients; c != first {
			t.Fatal("concurrent Gets returned different connections")
		}
	}

	// The agent restarts: the next Get reconnects.
	a.stop()
	// The agent gives sessions a grace period (5 s by default) before it
	// closes connections; allow for that on a loaded machine.
	select {
	case <-first.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("connection not done after the agent stopped")
	}
	if _, err := p.Get(ctx, "env1", a.ep()); err == nil {
		t.Fatal("Get succeeded with the agent stopped")
	}
	a.start(t)
	second, err := p.Get(ctx, "env1", a.ep())
	if err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
	if second == first {
		t.Fatal("Get returned the dead connection")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := second.DialTCP(ctx, "127.0.0.1:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatalf("DialTCP on the new connection: %v", err)
	}
	conn.Close()

	// Drop closes it.
	p.Drop("env1")
	select {
	case <-second.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Drop did not close the connection")
	}
}
