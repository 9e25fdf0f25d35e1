package server_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeClock is the server's clock, moved by the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// autoStopWorld is a server with a moved clock, an owner (alice), a
// member (bob) and a runner offering classes "small" (no caps) and
// "capped" (inactivity at most 1h, lifetime at most 8h).
type autoStopWorld struct {
	h      *harness
	clock  *fakeClock
	t0     time.Time
	alice  *user
	bob    *user
	runner covev1connect.RunnerServiceClient
}

func newAutoStopWorld(t *testing.T, configure func(*server.Config)) *autoStopWorld {
	t.Helper()
	w := &autoStopWorld{t0: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	w.clock = &fakeClock{t: w.t0}
	w.h = newHarnessWith(t, func(c *server.Config) {
		c.Now = w.clock.Now
		c.RunnerTimeout = 10000 * time.Hour // the runner never goes INACTIVE while the clock moves
		c.AutoStopInterval = 10000 * time.Hour
		if configure != nil {
			configure(c)
		}
	})
	w.alice = w.h.owner(t)
	w.bob = w.h.member(t, w.alice, "bob")
	w.runner, _, _ = w.h.joinRunner(t, w.alice, "host-a", &covev1.RunnerCapabilities{Runtimes: []string{"container"}, Cpus: 4, MemoryBytes: 8 << 30,
		Classes: []*covev1.EnvironmentClass{
			{Id: "small", Cpus: 1, MemoryBytes: 1 << 30},
			{Id: "capped", Cpus: 1, MemoryBytes: 1 << 30, MaxInactivitySeconds: 3600, MaxLifetimeSeconds: 8 * 3600},
		}})
	return w
}

// running creates an environment and has the runner report it RUNNING at
// the clock's time.
func (w *autoStopWorld) running(t *testing.T, name, class string, timeouts *covev1.Timeouts) *covev1.Environment {
	t.Helper()
	spec := gitSpec("https://example.com/repo.git")
	spec.ClassId, spec.Timeouts = class, timeouts
	env, err := w.alice.create(name, spec)
	if err != nil {
		t.Fatal(err)
	}
	if env.GetMetadata().GetRunnerId() == "" {
		t.Fatalf("not scheduled: %v", env.GetStatus().GetFailureMessage())
	}
	w.report(t, env.Id, nil)
	return env
}

// report sends a RUNNING status with activity a.
func (w *autoStopWorld) report(t *testing.T, id string, a *covev1.Activity) {
	t.Helper()
	env := w.get(t, id)
	st := &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, ObservedSpecVersion: env.GetSpec().GetSpecVersion(), Activity: a}
	if _, err := w.runner.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: id, Status: st})); err != nil {
		t.Fatal(err)
	}
}

func (w *autoStopWorld) get(t *testing.T, id string) *covev1.Environment {
	t.Helper()
	resp, err := w.alice.envs.GetEnvironment(context.Background(), connect.NewRequest(&covev1.GetEnvironmentRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.Environment
}

// at moves the clock to t0+d and makes one auto-stop pass; it returns the
// environment afterwards.
func (w *autoStopWorld) at(t *testing.T, d time.Duration, id string) *covev1.Environment {
	t.Helper()
	w.clock.set(w.t0.Add(d))
	if _, err := server.AutoStopOnce(context.Background(), w.h.srv); err != nil {
		t.Fatal(err)
	}
	return w.get(t, id)
}

func wantRunning(t *testing.T, env *covev1.Environment, when string) {
	t.Helper()
	if env.GetSpec().GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING || env.GetSpec().GetStopReason() != "" {
		t.Fatalf("%s: desired %v, stop reason %q; want it left running", when, env.GetSpec().GetDesiredPhase(), env.GetSpec().GetStopReason())
	}
}

func wantStopped(t *testing.T, env *covev1.Environment, reason, when string) {
	t.Helper()
	if env.GetSpec().GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED || env.GetSpec().GetStopReason() != reason {
		t.Fatalf("%s: desired %v, stop reason %q; want STOPPED with %q", when, env.GetSpec().GetDesiredPhase(), env.GetSpec().GetStopReason(), reason)
	}
}

const inactive30 = "stopped after 30 min without activity"

// TestAutoStopInactivity: an environment nobody uses stops 30 min after
// its start, with the reason; reported activity moves the stop; a user's
// start clears the reason.
func TestAutoStopInactivity(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	env := w.running(t, "idle", "small", nil)
	if got := env.GetSpec().GetTimeouts(); got.GetInactivitySeconds() != 1800 || got.GetMaxLifetimeSeconds() != 0 {
		t.Fatalf("default timeouts: %v; want 30 min inactivity, no lifetime", got)
	}
	wantRunning(t, w.at(t, 29*time.Minute, env.Id), "29 min without activity")
	stopped := w.at(t, 30*time.Minute, env.Id)
	wantStopped(t, stopped, inactive30, "30 min without activity")
	if stopped.GetSpec().GetSpecVersion() <= env.GetSpec().GetSpecVersion() {
		t.Fatalf("spec version not bumped: the runner would not act")
	}

	// The user starts it again: the reason is gone.
	resp, err := w.alice.envs.UpdateEnvironment(context.Background(), connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: env.Id, DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING}))
	if err != nil {
		t.Fatal(err)
	}
	wantRunning(t, resp.Msg.Environment, "started by its user")

	// Activity reported at 40 min moves the stop to 70 min, counted from
	// the activity (not the earlier start).
	w.clock.set(w.t0.Add(40 * time.Minute))
	w.report(t, env.Id, &covev1.Activity{LastActive: timestamppb.New(w.t0.Add(40 * time.Minute)), Reason: "terminal input from alice", Source: "terminal"})
	wantRunning(t, w.at(t, 69*time.Minute, env.Id), "29 min after the activity")
	wantStopped(t, w.at(t, 70*time.Minute, env.Id), inactive30, "30 min after the activity")
}

// TestAutoStopAttachedSession: an attached session keeps the environment
// running past its inactivity timeout, but not past its maximum lifetime.
func TestAutoStopAttachedSession(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	env := w.running(t, "attached", "small", &covev1.Timeouts{InactivitySeconds: 1800, MaxLifetimeSeconds: 8 * 3600})
	w.report(t, env.Id, &covev1.Activity{LastActive: timestamppb.New(w.t0), Reason: "ssh session from alice", Source: "ssh",
		Attached: []string{"ssh session from alice (pty)"}})
	wantRunning(t, w.at(t, 7*time.Hour, env.Id), "7h with a session attached")
	wantStopped(t, w.at(t, 8*time.Hour, env.Id), "stopped after its maximum lifetime of 8h", "8h with a session attached")
}

// TestAutoStopLease: a keep-alive lease holds the stop off until it
// expires; the lease's holder and reason are stored; ending it lets the
// environment stop.
func TestAutoStopLease(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	ctx := context.Background()
	env := w.running(t, "training", "small", nil)
	resp, err := w.alice.envs.KeepAlive(ctx, connect.NewRequest(&covev1.KeepAliveRequest{Id: "training", DurationSeconds: 7200, Reason: "training run"}))
	if err != nil {
		t.Fatal(err)
	}
	ls := resp.Msg.Environment.GetSpec().GetLeases()
	if len(ls) != 1 || ls[0].GetHolder() != "alice" || ls[0].GetReason() != "training run" || !ls[0].GetExpiresAt().AsTime().Equal(w.t0.Add(2*time.Hour)) {
		t.Fatalf("leases %v", ls)
	}
	wantRunning(t, w.at(t, 119*time.Minute, env.Id), "inactive for 2h under a 2h lease")
	wantStopped(t, w.at(t, 2*time.Hour, env.Id), inactive30, "lease expired")
	if n := len(w.get(t, env.Id).GetSpec().GetLeases()); n != 0 {
		t.Fatalf("expired lease kept on stop: %d", n)
	}

	// Again, then the lease is ended early: the environment stops at once
	// (it has been inactive for longer than 30 min).
	w.clock.set(w.t0.Add(3 * time.Hour))
	if _, err := w.alice.envs.UpdateEnvironment(ctx, connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: env.Id, DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING})); err != nil {
		t.Fatal(err)
	}
	w.report(t, env.Id, nil)
	for range 2 { // taking it twice replaces the first: one lease per holder
		if _, err := w.alice.envs.KeepAlive(ctx, connect.NewRequest(&covev1.KeepAliveRequest{Id: env.Id, DurationSeconds: 3600})); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(w.get(t, env.Id).GetSpec().GetLeases()); n != 1 {
		t.Fatalf("%d leases after taking the same lease twice; want 1", n)
	}
	wantRunning(t, w.at(t, 3*time.Hour+50*time.Minute, env.Id), "under the new lease")
	if _, err := w.alice.envs.KeepAlive(ctx, connect.NewRequest(&covev1.KeepAliveRequest{Id: env.Id})); err != nil {
		t.Fatal(err)
	}
	wantStopped(t, w.at(t, 3*time.Hour+50*time.Minute, env.Id), inactive30, "lease ended")
}

// TestKeepAliveRefusals: another user cannot keep someone's environment
// alive (nor learn it exists); durations and reasons are bounded; a
// stopped environment is not leased.
func TestKeepAliveRefusals(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	ctx := context.Background()
	w.running(t, "mine", "small", nil)
	capped := w.running(t, "capped", "capped", nil)
	keep := func(u *user, id string, secs int64, reason string) error {
		_, err := u.envs.KeepAlive(ctx, connect.NewRequest(&covev1.KeepAliveRequest{Id: id, DurationSeconds: secs, Reason: reason}))
		return err
	}
	for _, c := range []struct {
		name string
		err  error
		code connect.Code
		msg  string
	}{
		{"another user", keep(w.bob, "mine", 3600, ""), connect.CodeNotFound, `environment "mine" not found`},
		{"negative", keep(w.alice, "mine", -1, ""), connect.CodeInvalidArgument, "negative"},
		{"longer than 7 days", keep(w.alice, "mine", 8*24*3600, ""), connect.CodeInvalidArgument, "at most 7 days"},
		{"longer than the class lifetime", keep(w.alice, "capped", 9*3600, ""), connect.CodeInvalidArgument, "at most 8h"},
		{"escape sequence in the reason", keep(w.alice, "mine", 60, "x\x1b[2J"), connect.CodeInvalidArgument, "control character"},
		{"long reason", keep(w.alice, "mine", 60, strings.Repeat("r", 201)), connect.CodeInvalidArgument, "at most 200"},
	} {
		if code(c.err) != c.code || !strings.Contains(message(c.err), c.msg) {
			t.Errorf("%s: %v; want %v with %q", c.name, c.err, c.code, c.msg)
		}
	}
	if ls := w.get(t, "mine").GetSpec().GetLeases(); len(ls) != 0 {
		t.Fatalf("refused calls left leases: %v", ls)
	}
	// A stopped environment: start it first.
	if _, err := w.alice.envs.UpdateEnvironment(ctx, connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: capped.Id, DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED})); err != nil {
		t.Fatal(err)
	}
	if err := keep(w.alice, "capped", 60, ""); code(err) != connect.CodeFailedPrecondition || !strings.Contains(message(err), "cove env start capped") {
		t.Errorf("lease on a stopped environment: %v", err)
	}
	// Users cannot write leases or stop reasons at create.
	spec := gitSpec("https://example.com/repo.git")
	spec.Leases = []*covev1.Lease{{Holder: "mallory", ExpiresAt: timestamppb.New(w.t0.Add(1000 * time.Hour))}}
	if _, err := w.alice.create("forged", spec); code(err) != connect.CodeInvalidArgument || !strings.Contains(message(err), "spec.leases") {
		t.Errorf("create with a lease: %v", err)
	}
	spec = gitSpec("https://example.com/repo.git")
	spec.StopReason = "x"
	if _, err := w.alice.create("forged", spec); code(err) != connect.CodeInvalidArgument || !strings.Contains(message(err), "spec.stopReason") {
		t.Errorf("create with a stop reason: %v", err)
	}
}

// TestAutoStopDefaultsAndCaps: the server's defaults apply to an
// environment created without timeouts; a class caps a longer timeout and
// "never".
func TestAutoStopDefaultsAndCaps(t *testing.T) {
	w := newAutoStopWorld(t, func(c *server.Config) { c.DefaultInactivity = 10 * time.Minute; c.DefaultMaxLifetime = 12 * time.Hour })
	def := w.running(t, "def", "small", nil)
	if got := def.GetSpec().GetTimeouts(); got.GetInactivitySeconds() != 600 || got.GetMaxLifetimeSeconds() != 12*3600 {
		t.Fatalf("defaults: %v", got)
	}
	never := w.running(t, "never", "small", &covev1.Timeouts{})
	if got := never.GetSpec().GetTimeouts(); got.GetInactivitySeconds() != 0 || got.GetMaxLifetimeSeconds() != 0 {
		t.Fatalf("never asked for: %v", got)
	}
	capped := w.running(t, "capped", "capped", &covev1.Timeouts{InactivitySeconds: 0, MaxLifetimeSeconds: 100 * 3600})
	if got := capped.GetSpec().GetTimeouts(); got.GetInactivitySeconds() != 0 || got.GetMaxLifetimeSeconds() != 100*3600 {
		t.Fatalf("class caps written into the spec: %v; want what was asked, capped when evaluated (REV-7)", got)
	}
	wantRunning(t, w.at(t, 100*time.Hour, never.Id), "never")
	wantStopped(t, w.at(t, 100*time.Hour, capped.Id), "stopped after 1h without activity", "capped")
	// Small values are accepted: an e2e test runs with seconds.
	short := w.running(t, "short", "small", &covev1.Timeouts{InactivitySeconds: 5})
	if got := short.GetSpec().GetTimeouts().GetInactivitySeconds(); got != 5 {
		t.Fatalf("5 s inactivity stored as %d", got)
	}
}

// TestAutoStopFutureActivity: a runner reporting activity in the future
// (its clock ahead, or lying) does not keep an environment running for
// ever: the server counts it as now.
func TestAutoStopFutureActivity(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	env := w.running(t, "future", "small", nil)
	w.report(t, env.Id, &covev1.Activity{LastActive: timestamppb.New(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)), Source: "ssh"})
	wantStopped(t, w.at(t, 30*time.Minute, env.Id), inactive30, "30 min after a report of activity in 2100")
}

// TestAutoStopUserStopClearsReason: a user's own stop after an automatic
// one leaves no server reason behind.
func TestAutoStopUserStopClearsReason(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	ctx := context.Background()
	env := w.running(t, "env", "small", nil)
	wantStopped(t, w.at(t, time.Hour, env.Id), inactive30, "1h without activity")
	resp, err := w.alice.envs.UpdateEnvironment(ctx, connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: env.Id, DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED}))
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Msg.Environment.GetSpec().GetStopReason(); r != "" {
		t.Fatalf("user stop kept the server's reason %q", r)
	}
}

// TestAutoStopLoop: the server's own loop (not a pass the test makes)
// stops an environment once its clock passes the deadline.
func TestAutoStopLoop(t *testing.T) {
	w := newAutoStopWorld(t, func(c *server.Config) { c.AutoStopInterval = 10 * time.Millisecond })
	env := w.running(t, "loop", "small", &covev1.Timeouts{InactivitySeconds: 60})
	w.clock.set(w.t0.Add(time.Minute))
	testutil.WaitFor(t, "the server's loop to stop the environment", func() bool {
		return w.get(t, env.Id).GetSpec().GetStopReason() == "stopped after 1 min without activity"
	})
	wantStopped(t, w.get(t, env.Id), "stopped after 1 min without activity", "after the loop")
}

// TestAutoStopAttachedBounded: a runner reporting thousands of attached
// sessions (a flood of connections, or a runner gone wrong) stores a
// bounded list that says how many more there were.
func TestAutoStopAttachedBounded(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	env := w.running(t, "busy", "small", nil)
	var many []string
	for i := range 5000 {
		many = append(many, "ssh session from alice (pty) "+strings.Repeat("x", i%50))
	}
	w.report(t, env.Id, &covev1.Activity{LastActive: timestamppb.New(w.t0), Source: "ssh", Attached: many})
	got := w.get(t, env.Id).GetStatus().GetActivity().GetAttached()
	if len(got) != 20 || got[19] != "4981 more sessions" {
		t.Fatalf("%d attached stored, last %q; want 20 ending with the count of the rest", len(got), got[len(got)-1])
	}
	// Still attached: it keeps running.
	wantRunning(t, w.at(t, 10*time.Hour, env.Id), "10h with sessions attached")
}
