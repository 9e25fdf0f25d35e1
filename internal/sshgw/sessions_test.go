package sshgw

import (
	"bufio"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/crypto/ssh"
)

// sessionRecorder records what the gateway tells it, as events on a
// channel the test receives from (no sleeps).
type sessionRecorder struct {
	events chan string
	mu     sync.Mutex
	notice map[string]func(string) error // by user+kind, the last attached
}

func newSessionRecorder() *sessionRecorder {
	return &sessionRecorder{events: make(chan string, 100), notice: map[string]func(string) error{}}
}

func (r *sessionRecorder) Attach(envID string, s Session) func() {
	r.mu.Lock()
	r.notice[s.User+"/"+s.Kind] = s.Notice
	r.mu.Unlock()
	r.events <- "attach " + envID + " " + s.User + " " + s.Kind
	return func() { r.events <- "detach " + envID + " " + s.User + " " + s.Kind }
}

func (r *sessionRecorder) Activity(envID, user, kind string) {
	r.events <- "activity " + envID + " " + user + " " + kind
}

func (r *sessionRecorder) next(t *testing.T) string {
	t.Helper()
	return testutil.Receive(t, r.events, "a session event")
}

// none checks that nothing was recorded so far.
func (r *sessionRecorder) none(t *testing.T, after string) {
	t.Helper()
	select {
	case ev := <-r.events:
		t.Fatalf("after %s: unexpected %q", after, ev)
	default:
	}
}

// namedDial connects to env as owner with a certificate carrying name.
func (e *testEnv) namedDial(t *testing.T, env, owner, name string) *ssh.Client {
	t.Helper()
	s := newSigner(t)
	cert, err := e.ca.SignUserCertNamed(s.PublicKey(), env, owner, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.dial(t, s, cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSessionsPty: a session with a pty attaches (with the user's name
// from the certificate) until it closes; typing into it is activity; a
// notice reaches the user's terminal.
func TestSessionsPty(t *testing.T) {
	e := newTestEnv(t)
	rec := newSessionRecorder()
	e.gw.SetSessions(rec)
	c := e.namedDial(t, "env-a", "alice", "Alice")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	stdin, _ := sess.StdinPipe()
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start("cat"); err != nil {
		t.Fatal(err)
	}
	if ev := rec.next(t); ev != "attach env-a Alice pty" {
		t.Fatalf("event %q, want the pty attached", ev)
	}
	r := bufio.NewReader(stdout)
	io.WriteString(stdin, "hello\n")
	if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, "hello") {
		t.Fatalf("echo %q %v", line, err)
	}
	if ev := rec.next(t); ev != "activity env-a Alice terminal" {
		t.Fatalf("event %q, want terminal input", ev)
	}
	rec.mu.Lock()
	notice := rec.notice["Alice/pty"]
	rec.mu.Unlock()
	if notice == nil {
		t.Fatal("a pty session has no notice")
	}
	if err := notice("\r\ncove: this environment stops soon\r\n"); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("notice never reached the terminal: %v", err)
		}
		if strings.Contains(line, "cove: this environment stops soon") {
			break
		}
	}
	sess.Close()
	if ev := rec.next(t); ev != "detach env-a Alice pty" {
		t.Fatalf("event %q, want the pty detached", ev)
	}
	if err := notice("late"); err == nil {
		t.Error("a notice to a closed session succeeded")
	}
}

// TestSessionsNotActivity: a command without a pty is activity but
// attaches nothing, its input is not terminal input, and keep-alive
// packets (what a forgotten client sends for ever) are nothing.
func TestSessionsNotActivity(t *testing.T) {
	e := newTestEnv(t)
	rec := newSessionRecorder()
	e.gw.SetSessions(rec)
	c := e.namedDial(t, "env-a", "alice", "Alice")
	for range 3 {
		if ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil || !ok {
			t.Fatalf("keepalive: %v %v", ok, err)
		}
	}
	rec.none(t, "keep-alive packets")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sess.Stdin = strings.NewReader(strings.Repeat("typed\n", 1000))
	if out, err := sess.Output("cat"); err != nil || len(out) != 6000 {
		t.Fatalf("cat: %d bytes, %v", len(out), err)
	}
	if ev := rec.next(t); ev != "activity env-a Alice command" {
		t.Fatalf("event %q, want a command", ev)
	}
	rec.none(t, "input to a command without a pty")
}

// TestSessionsForward: a connection's port forwards attach it once, until
// the connection closes; a certificate without a name gives "".
func TestSessionsForward(t *testing.T) {
	e := newTestEnv(t)
	rec := newSessionRecorder()
	e.gw.SetSessions(rec)
	echo := startEchoServer(t)
	c := e.mustDial(t, "env-a", "alice")
	for i := range 3 {
		conn, err := c.Dial("tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		echoRoundTrip(t, conn, "ping")
		conn.Close()
		if i == 0 {
			if ev := rec.next(t); ev != "attach env-a  forward" {
				t.Fatalf("event %q, want the forward attached", ev)
			}
		}
	}
	rec.none(t, "more forwards on the same connection")
	c.Close()
	if ev := rec.next(t); ev != "detach env-a  forward" {
		t.Fatalf("event %q, want the forward detached", ev)
	}
}
