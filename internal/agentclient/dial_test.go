package agentclient_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/agent/agenttest"
	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/crypto/ssh"
)

// sshServer is a bare SSH server on a unix socket: what sits at an agent's
// socket, genuine or not. It accepts one connection.
type sshServer struct {
	socket   string
	offered  atomic.Int32 // client keys presented to it
	accepted chan net.Conn
	done     chan serverResult // the handshake's outcome
}

type serverResult struct {
	user, version string
	err           error
}

func startSSHServer(t *testing.T, hostKey, accept ssh.Signer, handshake bool) *sshServer {
	t.Helper()
	s := &sshServer{socket: filepath.Join(t.TempDir(), "agent.sock"), accepted: make(chan net.Conn, 1), done: make(chan serverResult, 1)}
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		s.offered.Add(1)
		if string(key.Marshal()) != string(accept.PublicKey().Marshal()) {
			return nil, errors.New("unknown key")
		}
		return &ssh.Permissions{}, nil
	}}
	cfg.AddHostKey(hostKey)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.accepted <- c
		if !handshake {
			return // holds the connection and never speaks
		}
		sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
		if err != nil {
			c.Close()
			s.done <- serverResult{err: err}
			return
		}
		go ssh.DiscardRequests(reqs)
		go func() {
			for nc := range chans {
				nc.Reject(ssh.Prohibited, "test server")
			}
		}()
		t.Cleanup(func() { sc.Close() })
		s.done <- serverResult{user: sc.User(), version: string(sc.ClientVersion())}
	}()
	return s
}

// Something else at an agent's socket (another environment's agent, a
// process that took the path) has another host key: the dial fails, and
// it never learns the environment's client key.
func TestDialConnRefusesImpostor(t *testing.T) {
	envKey, envHostKey, otherHostKey := agenttest.NewKey(t), agenttest.NewKey(t), agenttest.NewKey(t)
	s := startSSHServer(t, otherHostKey, envKey, true)
	ep := agentclient.Endpoint{Socket: s.socket, Signer: envKey, HostKey: envHostKey.PublicKey()}
	conn, _, _, err := agentclient.DialConn(testutil.Context(t), ep, agentclient.DialOptions{})
	if err == nil {
		conn.Close()
		t.Fatal("DialConn accepted another host key")
	}
	if r := testutil.Receive(t, s.done, "the impostor's handshake to end"); r.err == nil {
		t.Error("the impostor completed a handshake")
	}
	if n := s.offered.Load(); n != 0 {
		t.Errorf("the client key was offered to the impostor %d times", n)
	}
}

func TestDialConnLogsInAs(t *testing.T) {
	for _, tt := range []struct {
		opts          agentclient.DialOptions
		user, version string
	}{
		{agentclient.DialOptions{}, agentproto.DefaultUser, ""}, // x/crypto/ssh's version
		{agentclient.DialOptions{User: "dev", ClientVersion: "SSH-2.0-cove-gateway"}, "dev", "SSH-2.0-cove-gateway"},
	} {
		key, hostKey := agenttest.NewKey(t), agenttest.NewKey(t)
		s := startSSHServer(t, hostKey, key, true)
		ep := agentclient.Endpoint{Socket: s.socket, Signer: key, HostKey: hostKey.PublicKey()}
		conn, _, _, err := agentclient.DialConn(testutil.Context(t), ep, tt.opts)
		if err != nil {
			t.Fatalf("DialConn(%+v): %v", tt.opts, err)
		}
		conn.Close()
		r := testutil.Receive(t, s.done, "the server's handshake")
		if r.err != nil || r.user != tt.user || tt.version != "" && r.version != tt.version {
			t.Errorf("DialConn(%+v): server saw %+v, want user %q version %q", tt.opts, r, tt.user, tt.version)
		}
	}
}

// A socket whose peer never speaks cannot hold the caller: ending ctx ends
// the handshake.
func TestDialConnEndsWithContext(t *testing.T) {
	key, hostKey := agenttest.NewKey(t), agenttest.NewKey(t)
	s := startSSHServer(t, hostKey, key, false)
	ctx, cancel := context.WithCancel(testutil.Context(t))
	errc := make(chan error, 1)
	go func() {
		conn, _, _, err := agentclient.DialConn(ctx, agentclient.Endpoint{Socket: s.socket, Signer: key, HostKey: hostKey.PublicKey()}, agentclient.DialOptions{})
		if conn != nil {
			conn.Close()
		}
		errc <- err
	}()
	c := testutil.Receive(t, s.accepted, "the dial to reach the socket")
	defer c.Close()
	cancel()
	if err := testutil.Receive(t, errc, "DialConn to return"); !errors.Is(err, context.Canceled) {
		t.Errorf("DialConn after cancel = %v, want %v", err, context.Canceled)
	}
}

func TestDialConnNeedsACompleteEndpoint(t *testing.T) {
	key := agenttest.NewKey(t)
	for _, ep := range []agentclient.Endpoint{
		{Signer: key, HostKey: key.PublicKey()},
		{Socket: "/nonexistent", HostKey: key.PublicKey()},
		{Socket: "/nonexistent", Signer: key},
	} {
		if _, _, _, err := agentclient.DialConn(testutil.Context(t), ep, agentclient.DialOptions{}); err == nil {
			t.Errorf("DialConn(%+v) succeeded", ep)
		}
	}
}
