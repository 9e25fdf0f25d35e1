package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
	gossh "golang.org/x/crypto/ssh"
)

func TestPortSchedule(t *testing.T) {
	fast, idle, hot := 250*time.Millisecond, 5*time.Second, 10*time.Second
	s := portSchedule{fast: fast, idle: idle, hot: hot}
	t0 := time.Unix(1e9, 0)
	quiet := time.Hour // no activity for that long
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if w := s.next(at(0), false, quiet); w != idle {
		t.Errorf("nothing ever happened: wait %s, want %s", w, idle)
	}
	// Something new (a port, a new process): fast for hot, then idle.
	if w := s.next(at(time.Second), true, quiet); w != fast {
		t.Errorf("after news: wait %s, want %s", w, fast)
	}
	for _, d := range []time.Duration{time.Second + fast, hot} {
		if w := s.next(at(d), false, quiet); w != fast {
			t.Errorf("%s after news: wait %s, want %s", d-time.Second, w, fast)
		}
	}
	if w := s.next(at(time.Second+hot), false, quiet); w != idle {
		t.Errorf("hot after news: wait %s, want %s", w, idle)
	}
	// Activity keeps it fast for hot, however many looks find nothing.
	for _, ago := range []time.Duration{0, time.Second, hot - time.Millisecond} {
		if w := s.next(at(time.Minute), false, ago); w != fast {
			t.Errorf("activity %s ago: wait %s, want %s", ago, w, fast)
		}
	}
	if w := s.next(at(time.Minute), false, hot); w != idle {
		t.Errorf("activity hot ago: wait %s, want %s", w, idle)
	}
}

func TestPidWatch(t *testing.T) {
	f := filepath.Join(t.TempDir(), "ns_last_pid")
	must(t, os.WriteFile(f, []byte("41\n"), 0o644))
	p := pidWatch{path: f}
	if p.moved() {
		t.Error("first look: moved")
	}
	if p.moved() {
		t.Error("same pid: moved")
	}
	must(t, os.WriteFile(f, []byte("42\n"), 0o644))
	if !p.moved() {
		t.Error("new pid: not moved")
	}
	if p.moved() {
		t.Error("same pid again: moved")
	}
	// Without the file it says nothing, and stops looking.
	must(t, os.Remove(f))
	if p.moved() || p.path != "" {
		t.Errorf("missing file: moved or still watched (%q)", p.path)
	}
	if (&pidWatch{path: nsLastPid}).moved() {
		t.Error("first look at the real file: moved")
	}
}

func TestActivityTouch(t *testing.T) {
	var a activity
	if d := a.since(time.Now()); d < time.Hour {
		t.Errorf("never touched: since %s", d)
	}
	woken := a.woken()
	var buf bytes.Buffer
	if _, err := (activeWriter{&buf, &a}).Write([]byte("x")); err != nil || buf.String() != "x" {
		t.Fatalf("write through: %q, %v", buf.String(), err)
	}
	select {
	case <-woken:
	default:
		t.Fatal("a write did not wake the waiter")
	}
	if d := a.since(time.Now()); d > time.Minute {
		t.Errorf("just touched: since %s", d)
	}
	var none *activity
	none.touch() // a table without activity tracking
	if _, err := (activeWriter{&buf, nil}).Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
}

// portsStream opens a ports channel on c and returns its updates.
func portsStream(t *testing.T, c *gossh.Client) <-chan []agentproto.Port {
	t.Helper()
	ch, reqs, err := c.OpenChannel(agentproto.PortsChannel, nil)
	must(t, err)
	t.Cleanup(func() { ch.Close() })
	go gossh.DiscardRequests(reqs)
	lines := make(chan []agentproto.Port, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(ch)
		for sc.Scan() {
			var ps []agentproto.Port
			if err := json.Unmarshal(sc.Bytes(), &ps); err != nil {
				t.Errorf("bad line %q: %v", sc.Text(), err)
				return
			}
			lines <- ps
		}
	}()
	return lines
}

// waitPorts returns the first update for which cond holds, or fails after
// testutil.Patience.
func waitPorts(t *testing.T, lines <-chan []agentproto.Port, what string, cond func([]agentproto.Port) bool) []agentproto.Port {
	t.Helper()
	timeout := time.After(testutil.Patience(t))
	for {
		select {
		case ps, ok := <-lines:
			if !ok {
				t.Fatalf("ports stream ended while waiting for %s", what)
			}
			if cond(ps) {
				return ps
			}
		case <-timeout:
			t.Fatalf("no update with %s", what)
		}
	}
}

// waitChosen waits until port discovery chooses a wait of d.
func waitChosen(t *testing.T, waits <-chan time.Duration, d time.Duration) {
	t.Helper()
	timeout := time.After(testutil.Patience(t))
	for {
		select {
		case w := <-waits:
			if w == d {
				return
			}
		case <-timeout:
			t.Fatalf("port discovery never chose to wait %s", d)
		}
	}
}

func hasPort(ps []agentproto.Port, port int) bool {
	return slices.ContainsFunc(ps, func(p agentproto.Port) bool { return p.Port == port })
}

// idlePortsEnv is an agent whose port discovery, once quiet, waits idle
// between looks; the pid namespace's last pid never moves.
func idlePortsEnv(t *testing.T, idle time.Duration) (*testEnv, <-chan time.Duration) {
	t.Helper()
	e := newTestEnv(t)
	pidFile := filepath.Join(e.dir, "ns_last_pid")
	must(t, os.WriteFile(pidFile, []byte("1\n"), 0o644))
	waits := make(chan time.Duration, 1000)
	e.cfg.portsInterval = 20 * time.Millisecond
	e.cfg.portsIdle = idle
	e.cfg.portsHot = time.Nanosecond
	e.cfg.nsLastPid = pidFile
	e.cfg.portsWait = func(d time.Duration) {
		select {
		case waits <- d:
		default:
		}
	}
	return e, waits
}

// An idle environment's agent looks for ports rarely (here: once an hour);
// a process started in it wakes discovery at once, so a port opened
// meanwhile is reported without waiting out the idle interval.
func TestActivityWakesIdlePortDiscovery(t *testing.T) {
	e, waits := idlePortsEnv(t, time.Hour)
	e.start(t)
	c := e.client(t)
	lines := portsStream(t, c)
	waitPorts(t, lines, "the initial list", func([]agentproto.Port) bool { return true })
	waitChosen(t, waits, time.Hour) // quiet: the next look is an hour away

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if _, stderr, code := run(t, c, "true"); code != 0 {
		t.Fatalf("true: exit %d: %s", code, stderr)
	}
	waitPorts(t, lines, "the new listener", func(ps []agentproto.Port) bool { return hasPort(ps, port) })
}

// With nothing happening at all, a new port is still found at the next
// idle look.
func TestIdlePortDiscoveryStillLooks(t *testing.T) {
	e, waits := idlePortsEnv(t, 100*time.Millisecond)
	e.start(t)
	c := e.client(t)
	lines := portsStream(t, c)
	waitPorts(t, lines, "the initial list", func([]agentproto.Port) bool { return true })
	waitChosen(t, waits, 100*time.Millisecond)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	waitPorts(t, lines, "the new listener", func(ps []agentproto.Port) bool { return hasPort(ps, port) })
	ln.Close()
	waitPorts(t, lines, "the listener gone", func(ps []agentproto.Port) bool { return !hasPort(ps, port) })
}
