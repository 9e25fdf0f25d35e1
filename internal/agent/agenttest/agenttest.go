// Package agenttest runs a real agent (package agent) inside the test's
// own process, the way the runner reaches one: on a unix socket the harness
// creates and hands over as a descriptor, with generated client and host
// keys, and an agentclient.Endpoint that pins them. It needs no root and no
// container; sessions run as the test's own user unless the test configures
// another.
//
// Everything it creates (the temporary directory, the agent, connections
// made through it) is gone when the test ends.
package agenttest

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Options configures Start. The zero value is a working agent.
type Options struct {
	// Socket is where the agent serves; default agent.sock in a new
	// temporary directory. Its directory must exist. A stale socket file
	// there is replaced (as when an agent restarts).
	Socket string
	// ClientKey is the one key the agent accepts; default a new ed25519
	// key.
	ClientKey ssh.Signer
	// HostKey is the agent's host key (e.g. an ed25519.PrivateKey);
	// default a new ed25519 key.
	HostKey crypto.Signer
	// Config is the rest of the agent's configuration (User, WorkDir, Env,
	// LogPath, PostAttachPath, ...). The harness sets its SocketPath and
	// ListenFD, and writes the key files unless Config names them
	// (AuthorizedKeysPath, HostKeyPath: files the code under test wrote;
	// ClientKey and HostKey must then be the keys they hold — Start's first
	// handshake checks that). A nil Log logs to a buffer that is printed if
	// the test fails.
	Config agent.Config
}

// Agent is a running agent.
type Agent struct {
	// Endpoint reaches this agent as the runner does: its socket, the
	// client key it accepts and its pinned host key.
	Endpoint agentclient.Endpoint
	// Dir is the harness's temporary directory (keys; the default socket).
	Dir string
	// Config is the configuration the agent runs with.
	Config agent.Config

	opts    Options
	cancel  context.CancelFunc
	done    chan error // Run's result
	stopErr error
	once    sync.Once
}

// Start runs an agent until Stop or the end of the test. It returns once
// the agent completed an SSH handshake, and fails the test if the agent
// cannot start.
func Start(t testing.TB, opts Options) *Agent {
	t.Helper()
	dir := t.TempDir()
	if opts.Socket == "" {
		opts.Socket = filepath.Join(dir, "agent.sock")
	}
	cfg := opts.Config
	if (cfg.AuthorizedKeysPath != "" && opts.ClientKey == nil) || (cfg.HostKeyPath != "" && opts.HostKey == nil) {
		t.Fatal("agenttest: with Config's key files, Options.ClientKey and HostKey must be the keys they hold")
	}
	if opts.ClientKey == nil {
		opts.ClientKey = NewKey(t)
	}
	if opts.HostKey == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		opts.HostKey = priv
	}
	hostPub, err := ssh.NewPublicKey(opts.HostKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	cfg.SocketPath = opts.Socket
	if cfg.AuthorizedKeysPath == "" {
		cfg.AuthorizedKeysPath = filepath.Join(dir, "authorized_keys")
		if err := os.WriteFile(cfg.AuthorizedKeysPath, ssh.MarshalAuthorizedKey(opts.ClientKey.PublicKey()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.HostKeyPath == "" {
		cfg.HostKeyPath = filepath.Join(dir, "host_key")
		blk, err := ssh.MarshalPrivateKey(opts.HostKey, "agenttest")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg.HostKeyPath, pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.Log == nil {
		logs := &testutil.Buffer{}
		cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent log (%s):\n%s", opts.Socket, logs.String())
			}
		})
	}
	fd, err := listen(opts.Socket)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenFD = fd // the agent owns it from here

	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		Endpoint: agentclient.Endpoint{Socket: opts.Socket, Signer: opts.ClientKey, HostKey: hostPub},
		Dir:      dir,
		Config:   cfg,
		opts:     opts,
		cancel:   cancel,
		done:     make(chan error, 1),
	}
	go func() { a.done <- agent.Run(ctx, cfg) }()
	t.Cleanup(func() {
		if err := a.Stop(t); err != nil {
			t.Errorf("agent %s: %v", opts.Socket, err)
		}
	})
	a.ready(t)
	return a
}

// ready waits for a first SSH handshake, or fails the test with Run's
// error if the agent exits instead.
func (a *Agent) ready(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
	defer cancel()
	handshake := make(chan error, 1)
	go func() {
		c, err := agentclient.Dial(ctx, a.Endpoint)
		if err == nil {
			c.Close()
		}
		handshake <- err
	}()
	select {
	case err := <-handshake:
		if err != nil {
			t.Fatalf("agent %s: first connection: %v", a.Endpoint.Socket, err)
		}
	case err := <-a.done:
		cancel()
		<-handshake
		a.once.Do(func() { a.stopErr = err })
		t.Fatalf("agent %s exited at start: %v", a.Endpoint.Socket, err)
	}
}

// Stop stops the agent (as on SIGTERM: sessions get the grace period) and
// returns what Run returned; it fails the test if the agent does not stop
// within testutil.Patience. Later calls return the same.
func (a *Agent) Stop(t testing.TB) error {
	t.Helper()
	a.once.Do(func() {
		a.cancel()
		a.stopErr = testutil.Receive(t, a.done, "the agent at "+a.Endpoint.Socket+" to stop")
	})
	return a.stopErr
}

// Dial connects to the agent with agentclient, as the runner does; the
// connection is closed at the end of the test.
func (a *Agent) Dial(t testing.TB) *agentclient.Client {
	t.Helper()
	c, err := agentclient.Dial(testutil.Context(t), a.Endpoint)
	if err != nil {
		t.Fatalf("dial agent: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// SSH opens a plain SSH connection to the agent logged in as user
// (agentproto.DefaultUser when ""), with the agent's client key and its
// host key pinned — what the runner's gateway relays for a user's ssh.
// It is closed at the end of the test.
func (a *Agent) SSH(t testing.TB, user string) *ssh.Client {
	t.Helper()
	if user == "" {
		user = agentproto.DefaultUser
	}
	c, err := ssh.Dial("unix", a.Endpoint.Socket, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(a.Endpoint.Signer)},
		HostKeyCallback: ssh.FixedHostKey(a.Endpoint.HostKey),
		Timeout:         testutil.Patience(t),
	})
	if err != nil {
		t.Fatalf("ssh to agent as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// NewKey returns a new ed25519 SSH key.
func NewKey(t testing.TB) ssh.Signer {
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

// Options returns the options the agent was started with, defaults filled
// in: Start(t, a.Options()) after a.Stop restarts "the same" agent (same
// socket, same keys), as when an environment's agent restarts.
func (a *Agent) Options() Options { return a.opts }

// listen creates the agent's unix socket at path (mode 0600, replacing a
// stale socket file) and returns a close-on-exec descriptor of it for
// agent.Config.ListenFD, as the runner hands one to a container. The
// socket accepts connections from here on, so nobody waits for the agent
// to create it.
func listen(path string) (int, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
		if err := os.Remove(path); err != nil {
			return -1, err
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return -1, fmt.Errorf("agent socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return -1, err
	}
	raw, err := ln.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := raw.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err = errors.Join(cerr, err); err != nil {
		return -1, fmt.Errorf("agent socket: dup: %w", err)
	}
	return fd, nil
}
