package agentclient_test

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent/agenttest"
	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/testutil"
)

// newTestAgent runs a real agent in this process (agenttest).
func newTestAgent(t *testing.T) *agenttest.Agent {
	return agenttest.Start(t, agenttest.Options{})
}

func dial(t *testing.T, a *agenttest.Agent) *agentclient.Client {
	t.Helper()
	c, err := agentclient.Dial(testutil.Context(t), a.Endpoint)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func hasPort(ps []agentclient.Port, port int) bool {
	return slices.ContainsFunc(ps, func(p agentclient.Port) bool { return p.Port == port })
}

func TestWatchPorts(t *testing.T) {
	a := newTestAgent(t)
	c := dial(t, a)

	updates := make(chan []agentclient.Port, 100)
	ctx, cancel := context.WithCancel(context.Background())
	watchErr := make(chan error, 1)
	go func() { watchErr <- c.WatchPorts(ctx, func(ps []agentclient.Port) { updates <- ps }) }()
	wait := func(what string, cond func([]agentclient.Port) bool) {
		t.Helper()
		timeout := time.After(testutil.Patience(t))
		for {
			select {
			case ps := <-updates:
				if cond(ps) {
					return
				}
			case err := <-watchErr:
				t.Fatalf("WatchPorts returned while waiting for %s: %v", what, err)
			case <-timeout:
				t.Fatalf("no update with %s", what)
			}
		}
	}
	wait("the initial list", func([]agentclient.Port) bool { return true })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	wait("the listener", func(ps []agentclient.Port) bool { return hasPort(ps, port) })
	ln.Close()
	wait("the listener gone", func(ps []agentclient.Port) bool { return !hasPort(ps, port) })

	cancel()
	if err := testutil.Receive(t, watchErr, "WatchPorts to return after cancel"); err != context.Canceled {
		t.Errorf("WatchPorts after cancel: %v, want context.Canceled", err)
	}
	// The connection is still usable.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	got := make(chan []agentclient.Port, 1)
	go func() {
		_ = c.WatchPorts(ctx2, func(ps []agentclient.Port) {
			select {
			case got <- ps:
			default:
			}
		})
	}()
	testutil.Receive(t, got, "an update on a second watch on the same connection")

	// The watch ends with an error when the agent goes away (once it
	// streams: its first update came).
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	watchErr = make(chan error, 1)
	streaming := make(chan struct{})
	var once sync.Once
	go func() {
		watchErr <- c.WatchPorts(ctx3, func([]agentclient.Port) { once.Do(func() { close(streaming) }) })
	}()
	testutil.Receive(t, streaming, "the third watch's first update")
	a.Stop(t)
	if err := testutil.Receive(t, watchErr, "WatchPorts to return after the agent stopped"); err == nil || err == context.Canceled {
		t.Errorf("WatchPorts after agent stop: %v, want a stream error", err)
	}
	testutil.Receive(t, c.Done(), "Done to be closed after the agent stopped")
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
	ctx := testutil.Context(t)
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
	closed := testutil.RefusedAddr(t)
	if conn, err := c.DialTCP(ctx, closed); err == nil {
		conn.Close()
		t.Errorf("DialTCP to closed port %s succeeded", closed)
	}
}

func TestDialRejectsUnknownKey(t *testing.T) {
	a := newTestAgent(t)
	ctx := testutil.Context(t)
	wrong := a.Endpoint
	wrong.Signer = agenttest.NewKey(t)
	if c, err := agentclient.Dial(ctx, wrong); err == nil {
		c.Close()
		t.Fatal("Dial with an unauthorized key succeeded")
	}
	missing := a.Endpoint
	missing.Socket = filepath.Join(t.TempDir(), "none.sock")
	if _, err := agentclient.Dial(ctx, missing); err == nil {
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
	ctx := testutil.Context(t)
	// The attacker's endpoint, pointed at the victim's socket.
	ep := attacker.Endpoint
	ep.Socket = victim.Endpoint.Socket
	if c, err := agentclient.Dial(ctx, ep); err == nil {
		c.Close()
		t.Fatal("the attacker's endpoint reached the victim's agent")
	}
	// Even holding the victim's client key, the host key pin refuses an
	// impostor agent.
	ep = victim.Endpoint
	ep.Socket = attacker.Endpoint.Socket
	if c, err := agentclient.Dial(ctx, ep); err == nil {
		c.Close()
		t.Fatal("connected to an agent whose host key is not pinned")
	}
	if c, err := agentclient.Dial(ctx, agentclient.Endpoint{Socket: victim.Endpoint.Socket, Signer: victim.Endpoint.Signer}); err == nil {
		c.Close()
		t.Fatal("Dial without a pinned host key succeeded")
	}
}

// TestInheritedListener: the agent serves on a socket the runner created
// and handed over as a descriptor (agenttest hands one over as the runner
// does).
func TestInheritedListener(t *testing.T) {
	a := newTestAgent(t)
	if a.Config.ListenFD == 0 {
		t.Fatal("the harness did not hand over a descriptor")
	}
	c := dial(t, a)
	var out strings.Builder
	code, err := c.Exec(testutil.Context(t), agentclient.ExecRequest{Shell: "echo inherited", Stdout: &out})
	if err != nil || code != 0 || strings.TrimSpace(out.String()) != "inherited" {
		t.Fatalf("exec over the inherited socket: %d %v %q", code, err, out.String())
	}
}

func TestPool(t *testing.T) {
	a := newTestAgent(t)
	p := agentclient.NewPool()
	defer p.Close()
	ctx := testutil.Context(t)

	// Concurrent Gets share one connection.
	clients := make(chan *agentclient.Client, 5)
	for range 5 {
		go func() {
			c, err := p.Get(ctx, "env1", a.Endpoint)
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
	a.Stop(t)
	// (The agent gives sessions a grace period before it closes
	// connections.)
	testutil.Receive(t, first.Done(), "the connection to be done after the agent stopped")
	if _, err := p.Get(ctx, "env1", a.Endpoint); err == nil {
		t.Fatal("Get succeeded with the agent stopped")
	}
	a = agenttest.Start(t, a.Options())
	second, err := p.Get(ctx, "env1", a.Endpoint)
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
	testutil.Receive(t, second.Done(), "Drop to close the connection")
}
