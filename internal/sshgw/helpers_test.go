package sshgw

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	gliderssh "github.com/gliderlabs/ssh"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

func newKeyPair(t *testing.T) (ed25519.PrivateKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, s
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, s := newKeyPair(t)
	return s
}

// shortTempDir returns a temp dir with a path short enough for unix sockets.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sshgw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeAgent is a real gliderlabs/ssh server on a unix socket, like the
// environment agent.
type fakeAgent struct {
	name   string
	socket string
	client ssh.Signer // the key the gateway must use
	host   ssh.Signer // the agent's host key, pinned by the gateway
}

// target is how the gateway reaches the agent, for owner.
func (a *fakeAgent) target(owner string) Target {
	return Target{OwnerID: owner, AgentSocket: a.socket, AgentSigner: a.client, AgentHostKey: a.host.PublicKey()}
}

func startAgent(t *testing.T, name string) *fakeAgent {
	t.Helper()
	a := &fakeAgent{
		name:   name,
		socket: filepath.Join(shortTempDir(t), "agent.sock"),
		client: newSigner(t),
		host:   newSigner(t),
	}
	fwd := &gliderssh.ForwardedTCPHandler{}
	srv := &gliderssh.Server{
		Handler: a.handle,
		PublicKeyHandler: func(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
			return gliderssh.KeysEqual(key, a.client.PublicKey())
		},
		SubsystemHandlers: map[string]gliderssh.SubsystemHandler{"sftp": sftpHandler},
		LocalPortForwardingCallback: func(ctx gliderssh.Context, host string, port uint32) bool {
			return host == "127.0.0.1"
		},
		ReversePortForwardingCallback: func(ctx gliderssh.Context, host string, port uint32) bool {
			return host == "127.0.0.1"
		},
		ChannelHandlers: map[string]gliderssh.ChannelHandler{
			"session":      gliderssh.DefaultSessionHandler,
			"direct-tcpip": gliderssh.DirectTCPIPHandler,
		},
		RequestHandlers: map[string]gliderssh.RequestHandler{
			"tcpip-forward":        fwd.HandleSSHRequest,
			"cancel-tcpip-forward": fwd.HandleSSHRequest,
		},
	}
	srv.AddHostKey(a.host)
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return a
}

func sftpHandler(s gliderssh.Session) {
	srv, err := sftp.NewServer(s)
	if err != nil {
		return
	}
	srv.Serve()
	srv.Close()
}

func (a *fakeAgent) handle(s gliderssh.Session) {
	switch s.RawCommand() {
	case "whoami-agent":
		fmt.Fprintf(s, "%s user=%s\n", a.name, s.User())
		s.Exit(0)
	case "pty-term":
		p, _, ok := s.Pty()
		fmt.Fprintf(s, "pty=%v term=%s\n", ok, p.Term)
		s.Exit(0)
	case "pty-info":
		p, winCh, ok := s.Pty()
		if !ok {
			fmt.Fprintln(s, "no pty")
			s.Exit(1)
			return
		}
		fmt.Fprintf(s, "term=%s size=%dx%d\n", p.Term, p.Window.Width, p.Window.Height)
		<-winCh // the initial size
		select {
		case w := <-winCh:
			fmt.Fprintf(s, "resize=%dx%d\n", w.Width, w.Height)
			s.Exit(0)
		case <-time.After(testutil.MaxWait):
			s.Exit(1)
		}
	case "wait-signal":
		sigs := make(chan gliderssh.Signal, 1)
		s.Signals(sigs)
		fmt.Fprintln(s, "ready")
		select {
		case sig := <-sigs:
			fmt.Fprintf(s, "signal=%s\n", sig)
			s.Exit(0)
		case <-time.After(testutil.MaxWait):
			s.Exit(1)
		}
	case "die-signal":
		fmt.Fprintln(s, "dying")
		s.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{"TERM", false, "terminated", ""}))
		s.Close()
	default:
		// The session's context ends with the agent connection.
		cmd := exec.CommandContext(s.Context(), "/bin/sh", "-c", s.RawCommand())
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "AGENT=" + a.name}, s.Environ()...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s.Stderr()
		cmd.WaitDelay = 5 * time.Second
		code := 0
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else {
				fmt.Fprintln(s.Stderr(), err)
				code = 255
			}
		}
		s.Exit(code)
	}
}

// mapResolver resolves environments from a map.
type mapResolver struct {
	mu sync.Mutex
	m  map[string]Target
}

func (r *mapResolver) set(id string, t Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[id] = t
}

func (r *mapResolver) ResolveEnvironment(ctx context.Context, id string) (Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.m[id]
	if !ok {
		return Target{}, fmt.Errorf("environment %s not found", id)
	}
	return t, nil
}

// testEnv is a gateway with two environments: env-a (alice) and env-b (bob).
type testEnv struct {
	ca       *CA
	gw       *Gateway
	host     ssh.Signer
	addr     string
	resolver *mapResolver
	skew     atomic.Int64 // added to the gateway's clock
	agents   map[string]*fakeAgent
	stop     func() error
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	ca, err := LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{
		ca:       ca,
		host:     newSigner(t),
		resolver: &mapResolver{m: map[string]Target{}},
		agents:   map[string]*fakeAgent{},
	}
	for id, owner := range map[string]string{"env-a": "alice", "env-b": "bob"} {
		a := startAgent(t, id)
		e.agents[id] = a
		e.resolver.set(id, a.target(owner))
	}
	e.gw = NewGateway(Config{
		HostSigner: e.host,
		Resolver:   e.resolver,
		Log:        slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:      func() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) },
	})
	e.gw.SetUserCA(ca.PublicKey())
	hc, err := ca.SignHostCert(e.host.PublicKey(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.gw.SetHostCertificate(hc)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.gw.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	e.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-served:
			case <-time.After(testutil.Patience(t)):
				serveErr = errors.New("Serve did not return after cancel")
			}
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// testWriter sends log lines to t.Log (not after the test ended).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Logf("%s", p)
	return len(p), nil
}

// userCert returns a new key and a certificate for env signed by the CA.
func (e *testEnv) userCert(t *testing.T, env, owner string) (ssh.Signer, *ssh.Certificate) {
	t.Helper()
	s := newSigner(t)
	cert, err := e.ca.SignUserCert(s.PublicKey(), env, owner, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s, cert
}

func (e *testEnv) dial(t *testing.T, s ssh.Signer, cert *ssh.Certificate) (*ssh.Client, error) {
	t.Helper()
	cfg := ClientConfig(s, cert, e.ca.PublicKey())
	cfg.Timeout = testutil.Patience(t)
	return ssh.Dial("tcp", e.addr, cfg)
}

func (e *testEnv) mustDial(t *testing.T, env, owner string) *ssh.Client {
	t.Helper()
	s, cert := e.userCert(t, env, owner)
	c, err := e.dial(t, s, cert)
	if err != nil {
		t.Fatalf("dial %s: %v", env, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startEchoServer listens on 127.0.0.1 and echoes every connection.
func startEchoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echoRoundTrip writes msg to c, half-closes if possible, and checks the echo.
func echoRoundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(testutil.Patience(t)))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}
