package runner

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/covedev/cove/internal/autostop"
	"github.com/covedev/cove/internal/sshgw"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Activity for auto-stop (docs/autostop.md). The gateway tells the runner
// about sessions (a pty, a port forward) and terminal input; the port proxy
// about browser requests. Only users' own actions count: the runner's
// probes of the agent go through its own client, never the gateway.
//
// status.activity is reported when it changes meaningfully: the set of
// attached sessions changes, the warning is written or cleared, or the
// last activity moved by reportStep or more — not per keystroke. The
// server stops the environment; the runner warns its open terminals
// before (autostop.Decision.WarnAt).

// DefaultAutoStopWarning is how long before an automatic stop open
// terminals are warned (--autostop-warning); at most half the timeout.
const DefaultAutoStopWarning = 5 * time.Minute

// activityReportStep is how far the last activity must move to be
// reported again (less for short inactivity timeouts: a quarter of them).
const activityReportStep = 30 * time.Second

// maxAttachedShown is the most attached sessions listed in a status.
const maxAttachedShown = 10

// activityState is one environment's activity; the worker's mu guards it.
type activityState struct {
	last           time.Time
	reason, source string
	sessions       map[uint64]*attachedSession
	nextID         uint64
	// shown is what send reports (nil: nothing yet); pending a queued
	// report.
	shown   *covev1.Activity
	pending bool
	// warnedFor is the deadline the terminals were warned of; warnedAt
	// when (zero once activity cleared it).
	warnedFor, warnedAt time.Time
	timer               stopper
}

type stopper interface{ Stop() bool }

type attachedSession struct {
	desc   string
	notice func(string) error // nil for a forward
	warned time.Time          // the deadline this session was warned of
}

// runnerSessions is the runner as the gateway's sshgw.Sessions.
type runnerSessions struct{ r *Runner }

func (s runnerSessions) Attach(envID string, sess sshgw.Session) func() {
	w := s.r.workerOf(envID)
	if w == nil {
		return func() {}
	}
	user := userLabel(sess.User)
	desc := "ssh session from " + user + " (" + sess.Kind + ")"
	if sess.Kind == "forward" {
		desc = "port forward from " + user
	}
	w.mu.Lock()
	if w.act.sessions == nil {
		w.act.sessions = map[uint64]*attachedSession{}
	}
	w.act.nextID++
	id := w.act.nextID
	w.act.sessions[id] = &attachedSession{desc: desc, notice: sess.Notice}
	w.noteLocked("ssh session from "+user, "ssh")
	w.mu.Unlock()
	w.activityChanged()
	return func() {
		w.mu.Lock()
		delete(w.act.sessions, id)
		// The user was there until the session ended.
		w.noteLocked("ssh session from "+user, "ssh")
		w.mu.Unlock()
		w.activityChanged()
	}
}

func (s runnerSessions) Activity(envID, user, kind string) {
	w := s.r.workerOf(envID)
	if w == nil {
		return
	}
	reason := "terminal input from " + userLabel(user)
	if kind == "command" {
		reason = "ssh command from " + userLabel(user)
	}
	w.mu.Lock()
	w.noteLocked(reason, kind)
	w.mu.Unlock()
	w.activityChanged()
}

// userLabel is a certificate's user name fit for a status line.
func userLabel(name string) string {
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	if name == "" || len(name) > 64 {
		return "the owner"
	}
	return name
}

// touch records a request through the port proxy.
func (r *Runner) touch(envID string, port int) {
	if w := r.workerOf(envID); w != nil {
		w.mu.Lock()
		w.noteLocked(fmt.Sprintf("port %d from a browser", port), "port")
		w.mu.Unlock()
		w.activityChanged()
	}
}

func (r *Runner) workerOf(envID string) *worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[envID]
}

// noteLocked records activity now; a warning given is cleared. Callers
// hold w.mu.
func (w *worker) noteLocked(reason, source string) {
	w.act.last, w.act.reason, w.act.source = w.r.clock.Now(), reason, source
	w.act.warnedAt = time.Time{}
}

// activityChanged reports the activity if it changed meaningfully and
// re-arms the warning.
func (w *worker) activityChanged() {
	w.mu.Lock()
	a := w.currentActivityLocked()
	meaningful := w.act.shown == nil ||
		!slices.Equal(a.Attached, w.act.shown.Attached) ||
		(a.WarnedAt == nil) != (w.act.shown.WarnedAt == nil) ||
		a.LastActive.AsTime().Sub(w.act.shown.GetLastActive().AsTime()) >= w.reportStepLocked()
	send := false
	if meaningful {
		w.act.shown = a
		if !w.act.pending {
			w.act.pending, send = true, true
		}
	}
	w.mu.Unlock()
	if send {
		go w.resendRunning(w.ctx, &w.act.pending, "activity") // ports.go
	}
	w.armWarning()
}

// reportStepLocked is how far the last activity moves before it is
// reported again: activityReportStep, or a quarter of a shorter
// inactivity timeout (the server decides from what it was told).
func (w *worker) reportStepLocked() time.Duration {
	step := activityReportStep
	if d := w.decisionLocked(); d.Inactivity > 0 {
		step = min(step, d.Inactivity/4)
	}
	return max(step, time.Second)
}

// currentActivityLocked is the activity as it would be reported now.
func (w *worker) currentActivityLocked() *covev1.Activity {
	a := &covev1.Activity{Reason: w.act.reason, Source: w.act.source}
	if !w.act.last.IsZero() {
		a.LastActive = timestamppb.New(w.act.last.Truncate(time.Second))
	}
	for _, s := range w.act.sessions {
		a.Attached = append(a.Attached, s.desc)
	}
	slices.Sort(a.Attached)
	if n := len(a.Attached); n > maxAttachedShown {
		a.Attached = append(a.Attached[:maxAttachedShown-1], fmt.Sprintf("%d more sessions", n-maxAttachedShown+1))
	}
	if !w.act.warnedAt.IsZero() {
		a.WarnedAt = timestamppb.New(w.act.warnedAt.Truncate(time.Second))
	}
	return a
}

// decorateActivity sets st.Activity: what was last shown. Callers hold
// w.mu.
func (w *worker) decorateActivity(st *covev1.EnvironmentStatus) {
	st.Activity = nil
	if w.act.shown != nil {
		st.Activity = proto.Clone(w.act.shown).(*covev1.Activity)
	}
}

// decisionLocked is the auto-stop rule on the environment as the server
// last sent it, with this runner's own (newer) activity and its class.
func (w *worker) decisionLocked() autostop.Decision {
	env := w.env
	if env == nil {
		return autostop.Decision{}
	}
	in := autostop.ForEnvironment(env, w.r.classes.find(env.GetSpec().GetClassId()), w.r.clock.Now())
	if w.act.last.After(in.LastActive) {
		in.LastActive = w.act.last
	}
	in.Attached = nil
	for _, s := range w.act.sessions {
		in.Attached = append(in.Attached, s.desc)
	}
	return autostop.Evaluate(in)
}

// armWarning sets the timer that warns open terminals, when there are any
// and the environment has a deadline.
func (w *worker) armWarning() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.act.timer != nil {
		w.act.timer.Stop()
		w.act.timer = nil
	}
	if w.ctx == nil || w.ctx.Err() != nil || !w.hasTerminalLocked() {
		return
	}
	d := w.decisionLocked()
	at := d.WarnAt(w.r.autoStopWarning())
	if at.IsZero() {
		return
	}
	w.act.timer = time.AfterFunc(max(at.Sub(w.r.clock.Now()), 0), w.warnTerminals)
}

func (w *worker) hasTerminalLocked() bool {
	for _, s := range w.act.sessions {
		if s.notice != nil {
			return true
		}
	}
	return false
}

// warnTerminals writes the warning into every open terminal not yet
// warned of the current deadline, once its time has come.
func (w *worker) warnTerminals() {
	w.mu.Lock()
	now := w.r.clock.Now()
	d := w.decisionLocked()
	at := d.WarnAt(w.r.autoStopWarning())
	if at.IsZero() || now.Before(at) || !now.Before(d.Deadline) {
		w.mu.Unlock()
		return
	}
	text := warningText(w.env.GetMetadata().GetName(), d, now)
	var notices []func(string) error
	for _, s := range w.act.sessions {
		if s.notice != nil && !s.warned.Equal(d.Deadline) {
			s.warned = d.Deadline
			notices = append(notices, s.notice)
		}
	}
	if len(notices) > 0 && !w.act.warnedFor.Equal(d.Deadline) {
		w.act.warnedFor, w.act.warnedAt = d.Deadline, now
	}
	w.mu.Unlock()
	for _, n := range notices {
		// A client that does not read blocks its own write only.
		go func() { _ = n(text) }()
	}
	if len(notices) > 0 {
		w.r.log.Info("auto-stop warning written", "env", w.id, "terminals", len(notices), "stops_at", d.Deadline)
		w.activityChanged()
	}
}

// warningText is the line written into terminals.
func warningText(name string, d autostop.Decision, now time.Time) string {
	when := d.Deadline.Local().Format("15:04")
	if d.Deadline.Sub(now) < 10*time.Minute {
		when = d.Deadline.Local().Format("15:04:05")
	}
	switch d.Kind {
	case autostop.Lifetime:
		return fmt.Sprintf("\r\ncove: this environment stops at %s (%s). Save your work; `cove env start %s` starts it again.\r\n", when, d.Why(), name)
	default:
		return fmt.Sprintf("\r\ncove: this environment stops at %s (%s). Type anything, or run `cove env keepalive %s --for 1h`.\r\n", when, d.Why(), name)
	}
}

// autoStopWarning is the configured warning lead.
func (r *Runner) autoStopWarning() time.Duration {
	if r.cfg.AutoStopWarning > 0 {
		return r.cfg.AutoStopWarning
	}
	return DefaultAutoStopWarning
}
