package runner

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/autostop"
	"github.com/covedev/cove/internal/sshgw"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// terminal records what the runner writes into one session.
type terminal struct {
	mu      sync.Mutex
	written []string
	got     chan string
}

func newTerminal() *terminal { return &terminal{got: make(chan string, 10)} }

func (t *terminal) notice(s string) error {
	t.mu.Lock()
	t.written = append(t.written, s)
	t.mu.Unlock()
	t.got <- s
	return nil
}

func (t *terminal) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.written)
}

// activityRunner is a runner with one RUNNING environment "demo" started
// at the clock's time, with timeouts to.
func activityRunner(t *testing.T, to *covev1.Timeouts) (*Runner, *worker, *statusRecorder, *stepClock) {
	t.Helper()
	r, w, rec, clk := usageRunner(t)
	w.mu.Lock()
	w.env = &covev1.Environment{Id: "env1",
		Metadata: &covev1.EnvironmentMetadata{Name: "demo", StartedAt: timestamppb.New(clk.Now())},
		Spec:     &covev1.EnvironmentSpec{DesiredPhase: phaseRunning, Timeouts: to},
		Status:   &covev1.EnvironmentStatus{Phase: phaseRunning}}
	w.mu.Unlock()
	return r, w, rec, clk
}

func nextActivity(t *testing.T, rec *statusRecorder) *covev1.Activity {
	t.Helper()
	st := testutil.Receive(t, rec.got, "a status with the activity")
	if st.GetActivity() == nil {
		t.Fatalf("status without activity: %v", st)
	}
	return st.GetActivity()
}

// untilActivity receives statuses until one's activity satisfies ok
// (reports queued together go out as one, with the latest).
func untilActivity(t *testing.T, rec *statusRecorder, what string, ok func(*covev1.Activity) bool) *covev1.Activity {
	t.Helper()
	for {
		if a := nextActivity(t, rec); ok(a) {
			return a
		}
	}
}

func shownActivity(w *worker) *covev1.Activity {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.act.shown
}

// TestActivitySessions: an attached pty session is reported at once with
// the user's name; typing is reported only once the last activity moved
// by the report step (not per keystroke); the session's end is reported
// and counts as activity.
func TestActivitySessions(t *testing.T) {
	r, w, rec, clk := activityRunner(t, &covev1.Timeouts{InactivitySeconds: 1800})
	gw := runnerSessions{r}
	term := newTerminal()
	detach := gw.Attach("env1", sshgw.Session{User: "alice", Kind: "pty", Notice: term.notice})
	a := nextActivity(t, rec)
	if len(a.Attached) != 1 || a.Attached[0] != "ssh session from alice (pty)" || a.Reason != "ssh session from alice" || a.Source != "ssh" {
		t.Fatalf("attached: %v", a)
	}
	start := a.GetLastActive().AsTime()

	// Keystrokes for 29 s: nothing new to report.
	for range 29 {
		clk.add(time.Second)
		gw.Activity("env1", "alice", "terminal")
	}
	if got := shownActivity(w).GetLastActive().AsTime(); !got.Equal(start) {
		t.Fatalf("activity re-reported after %v of typing (step %v)", got.Sub(start), activityReportStep)
	}
	// The 30th second: reported.
	clk.add(time.Second)
	gw.Activity("env1", "alice", "terminal")
	a = nextActivity(t, rec)
	if got := a.GetLastActive().AsTime(); got.Sub(start) != 30*time.Second || a.Reason != "terminal input from alice" || a.Source != "terminal" {
		t.Fatalf("after 30 s of typing: %v", a)
	}

	// The session ends: nothing attached, and its end is the last activity.
	clk.add(5 * time.Second)
	detach()
	a = nextActivity(t, rec)
	if len(a.Attached) != 0 || !a.GetLastActive().AsTime().Equal(clk.Now()) {
		t.Fatalf("after the session ended: %v", a)
	}
	if term.count() != 0 {
		t.Fatalf("terminal written to without a deadline: %q", term.written)
	}
}

// TestActivityShortTimeoutReportsSooner: with a 20 s inactivity timeout
// the last activity is reported every 5 s of typing, so the server never
// stops an environment its user is typing in.
func TestActivityShortTimeoutReportsSooner(t *testing.T) {
	r, _, rec, clk := activityRunner(t, &covev1.Timeouts{InactivitySeconds: 20})
	gw := runnerSessions{r}
	gw.Activity("env1", "alice", "command")
	first := nextActivity(t, rec).GetLastActive().AsTime()
	clk.add(5 * time.Second)
	gw.Activity("env1", "alice", "terminal")
	if got := nextActivity(t, rec).GetLastActive().AsTime(); got.Sub(first) != 5*time.Second {
		t.Fatalf("reported %v after the first", got.Sub(first))
	}
}

// TestActivityWarning: before the maximum lifetime ends, every open
// terminal gets the warning once, warned_at is reported, and activity
// after the warning clears warned_at (not the lifetime: nothing moves it).
func TestActivityWarning(t *testing.T) {
	r, w, rec, clk := activityRunner(t, &covev1.Timeouts{InactivitySeconds: 1800, MaxLifetimeSeconds: 3600})
	r.cfg.AutoStopWarning = 5 * time.Minute
	gw := runnerSessions{r}
	t1, t2 := newTerminal(), newTerminal()
	gw.Attach("env1", sshgw.Session{User: "alice", Kind: "pty", Notice: t1.notice})
	gw.Attach("env1", sshgw.Session{User: "alice", Kind: "pty", Notice: t2.notice})
	gw.Attach("env1", sshgw.Session{User: "alice", Kind: "forward"}) // no terminal: nothing written
	untilActivity(t, rec, "three sessions attached", func(a *covev1.Activity) bool { return len(a.Attached) == 3 })

	// Not yet: 5 min and 1 s before the end.
	clk.add(54*time.Minute + 59*time.Second)
	w.warnTerminals()
	if t1.count()+t2.count() != 0 {
		t.Fatal("warned too early")
	}
	// 5 min before: both terminals, once.
	clk.add(time.Second)
	w.warnTerminals()
	for _, term := range []*terminal{t1, t2} {
		text := testutil.Receive(t, term.got, "the warning")
		if !strings.HasPrefix(text, "\r\ncove: this environment stops at ") || !strings.Contains(text, "(its maximum lifetime of 1h)") ||
			!strings.Contains(text, "`cove env start demo`") || !strings.HasSuffix(text, "\r\n") {
			t.Fatalf("warning %q", text)
		}
	}
	a := untilActivity(t, rec, "warned_at", func(a *covev1.Activity) bool { return a.GetWarnedAt() != nil })
	if !a.GetWarnedAt().AsTime().Equal(clk.Now()) {
		t.Fatalf("warned_at not reported: %v", a)
	}
	clk.add(time.Second)
	w.warnTerminals()
	if n := t1.count() + t2.count(); n != 2 {
		t.Fatalf("%d warnings written; want one per terminal", n)
	}
	// A key pressed: the warning is cleared in the status.
	gw.Activity("env1", "alice", "terminal")
	untilActivity(t, rec, "warned_at cleared", func(a *covev1.Activity) bool { return a.GetWarnedAt() == nil })
}

// TestActivityWarningText: the inactivity warning tells the user what to
// do, with the environment's name.
func TestActivityWarningText(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 14, 2, 0, 0, time.Local)
	d := autostop.Evaluate(autostop.Input{Now: t0, StartedAt: t0, Inactivity: 30 * time.Minute})
	got := warningText("demo", d, t0.Add(25*time.Minute))
	want := "\r\ncove: this environment stops at 14:32:00 (30 min without activity). Type anything, or run `cove env keepalive demo --for 1h`.\r\n"
	if got != want {
		t.Fatalf("warning\n%q, want\n%q", got, want)
	}
}

// TestActivityPortProxyAndNames: browser requests through the port proxy
// are activity with the port; a certificate's user name with escape
// sequences never reaches a status line.
func TestActivityPortProxyAndNames(t *testing.T) {
	r, _, rec, _ := activityRunner(t, nil)
	r.touch("env1", 3000)
	if a := nextActivity(t, rec); a.Reason != "port 3000 from a browser" || a.Source != "port" {
		t.Fatalf("port proxy activity: %v", a)
	}
	runnerSessions{r}.Attach("env1", sshgw.Session{User: "evil\x1b]0;pwned\x07\x1b[2J", Kind: "pty", Notice: newTerminal().notice})
	a := untilActivity(t, rec, "the session", func(a *covev1.Activity) bool { return len(a.Attached) == 1 })
	for _, s := range append([]string{a.Reason}, a.Attached...) {
		if strings.ContainsAny(s, "\x1b\x07") {
			t.Fatalf("control characters reported: %q", s)
		}
	}
	// Unknown environments are ignored.
	runnerSessions{r}.Attach("nope", sshgw.Session{User: "alice", Kind: "pty"})()
	runnerSessions{r}.Activity("nope", "alice", "terminal")
	r.touch("nope", 1)
}
