package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// restartAt moves the clock to t0+d and plays what a runner reports when
// the environment's PID 1 exits (root inside ran `kill -TERM 1`) and it
// starts the container again: STARTING, then RUNNING.
func (w *autoStopWorld) restartAt(t *testing.T, d time.Duration, id string) {
	t.Helper()
	w.clock.set(w.t0.Add(d))
	env := w.get(t, id)
	for _, ph := range []covev1.EnvironmentPhase{covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STARTING, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING} {
		st := &covev1.EnvironmentStatus{Phase: ph, ObservedSpecVersion: env.GetSpec().GetSpecVersion()}
		if _, err := w.runner.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: id, Status: st})); err != nil {
			t.Fatal(err)
		}
	}
}

func (w *autoStopWorld) setPhase(t *testing.T, id string, want covev1.EnvironmentPhase) {
	t.Helper()
	if _, err := w.alice.envs.UpdateEnvironment(context.Background(), connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: id, DesiredPhase: want})); err != nil {
		t.Fatal(err)
	}
}

// TestAutoStopLifetimeNotResetByRestart (review REV-6): an environment
// whose code restarts it (its PID 1 exits every 59 min, the runner starts
// it again) still stops when its maximum lifetime of 1h is up, counted
// from the user's start. A user's stop and start does begin a new run.
func TestAutoStopLifetimeNotResetByRestart(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	const reason = "stopped after its maximum lifetime of 1h"
	env := w.running(t, "miner", "small", &covev1.Timeouts{MaxLifetimeSeconds: 3600})
	w.restartAt(t, 59*time.Minute, env.Id)
	wantRunning(t, w.at(t, 59*time.Minute, env.Id), "59 min, just restarted")
	if got := w.get(t, env.Id).GetMetadata().GetRunStartedAt().AsTime(); !got.Equal(w.t0) {
		t.Errorf("run_started_at after a runner's restart: %s; want the user's start %s", got, w.t0)
	}
	wantStopped(t, w.at(t, 60*time.Minute, env.Id), reason, "60 min")

	// The user starts it again at 61 min; it runs at 62 min: a new run.
	w.clock.set(w.t0.Add(61 * time.Minute))
	w.setPhase(t, env.Id, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING)
	w.clock.set(w.t0.Add(62 * time.Minute))
	w.report(t, env.Id, nil)
	w.restartAt(t, 120*time.Minute, env.Id)
	wantRunning(t, w.at(t, 121*time.Minute, env.Id), "59 min into the second run")
	wantStopped(t, w.at(t, 122*time.Minute, env.Id), reason, "60 min into the second run")
}

// TestAutoStopClassLifetimeNotResetByRestart (review REV-6, the reviewer's
// scenario): the class's maximum lifetime (advertised by the runner)
// applies to an environment that asked for none and restarts itself.
func TestAutoStopClassLifetimeNotResetByRestart(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	env := w.running(t, "miner", "capped", &covev1.Timeouts{}) // class: lifetime at most 8h, inactivity 1h
	for d := 50 * time.Minute; d < 8*time.Hour; d += 50 * time.Minute {
		w.restartAt(t, d, env.Id)
		w.report(t, env.Id, &covev1.Activity{LastActive: timestamppb.New(w.t0.Add(d))}) // kept "active" too
		wantRunning(t, w.at(t, d, env.Id), "before 8h")
	}
	wantStopped(t, w.at(t, 8*time.Hour, env.Id), "stopped after its maximum lifetime of 8h", "8h")
}

// TestAutoStopInactivityNotResetByRestart (review REV-6): nobody uses the
// environment, it restarts itself every 29 min; it stops 30 min after the
// user's start, and a restart is not activity.
func TestAutoStopInactivityNotResetByRestart(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	env := w.running(t, "idle", "small", &covev1.Timeouts{InactivitySeconds: 1800})
	w.restartAt(t, 29*time.Minute, env.Id)
	wantRunning(t, w.at(t, 29*time.Minute, env.Id), "29 min, just restarted")
	wantStopped(t, w.at(t, 30*time.Minute, env.Id), inactive30, "30 min")
}

// TestAutoStopCapsOfTheEnvironmentsRunner (review REV-7): a runner
// advertising 1 s caps is refused (below the floor) and what it had
// advertised stays; a second runner's legitimate strict caps for the
// class are not written into the spec of an environment on another
// runner and do not apply to it, while they do apply to one on itself.
func TestAutoStopCapsOfTheEnvironmentsRunner(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	caps := func(inactivity, lifetime int64) *covev1.RunnerCapabilities {
		return &covev1.RunnerCapabilities{Runtimes: []string{"container"}, Cpus: 4, MemoryBytes: 8 << 30,
			Classes: []*covev1.EnvironmentClass{{Id: "small", Cpus: 1, MemoryBytes: 1 << 30, MaxInactivitySeconds: inactivity, MaxLifetimeSeconds: lifetime}}}
	}
	strict, idStrict, _ := w.h.joinRunner(t, w.alice, "host-strict", caps(120, 0))
	for _, c := range []*covev1.RunnerCapabilities{caps(1, 1), caps(1, 0), caps(0, 59)} {
		_, err := strict.Heartbeat(context.Background(), connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: c}))
		if code(err) != connect.CodeInvalidArgument || !strings.Contains(message(err), "below this server's floor of 1m0s") {
			t.Errorf("caps %v: %v; want refused below the floor", c.GetClasses()[0], err)
		}
	}

	// Two environments asking for 8h of inactivity: the scheduler puts
	// one on each runner (the least loaded first).
	asked := &covev1.Timeouts{InactivitySeconds: 8 * 3600}
	var envs []*covev1.Environment
	for _, name := range []string{"work", "work2"} {
		spec := gitSpec("https://example.com/repo.git")
		spec.ClassId, spec.Timeouts = "small", asked
		env, err := w.alice.create(name, spec)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, env)
	}
	onA, onStrict := envs[0], envs[1]
	if onA.GetMetadata().GetRunnerId() == idStrict {
		onA, onStrict = onStrict, onA
	}
	if onA.GetMetadata().GetRunnerId() == idStrict || onStrict.GetMetadata().GetRunnerId() != idStrict {
		t.Fatalf("scheduled on %q and %q; want one on each runner", onA.GetMetadata().GetRunnerId(), onStrict.GetMetadata().GetRunnerId())
	}
	w.report(t, onA.Id, nil)
	st := &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, ObservedSpecVersion: onStrict.GetSpec().GetSpecVersion()}
	if _, err := strict.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: onStrict.Id, Status: st})); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*covev1.Environment{onA, onStrict} {
		if got := e.GetSpec().GetTimeouts(); got.GetInactivitySeconds() != 8*3600 || got.GetMaxLifetimeSeconds() != 0 {
			t.Errorf("spec.timeouts %v; want what the user asked (8h inactivity), capped only when evaluated", got)
		}
	}
	// What users are shown: the caps of the environment's own runner.
	if got := w.get(t, onStrict.Id).GetStatus().GetClassCaps(); got.GetInactivitySeconds() != 120 || got.GetMaxLifetimeSeconds() != 0 {
		t.Errorf("class caps shown for the environment on host-strict: %v; want 2 min inactivity", got)
	}
	if got := w.get(t, onA.Id).GetStatus().GetClassCaps(); got != nil {
		t.Errorf("class caps shown for the environment on host-a: %v; want none", got)
	}
	// A runner cannot put caps of its choosing in what users are shown.
	forged := &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, ObservedSpecVersion: onA.GetSpec().GetSpecVersion(),
		ClassCaps: &covev1.Timeouts{InactivitySeconds: 1}}
	if _, err := w.runner.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: onA.Id, Status: forged})); err != nil {
		t.Fatal(err)
	}
	if got := w.get(t, onA.Id).GetStatus().GetClassCaps(); got != nil {
		t.Errorf("class caps reported by the runner kept: %v", got)
	}
	wantStopped(t, w.at(t, 2*time.Minute, onStrict.Id), "stopped after 2 min without activity", "on host-strict after 2 min")
	wantRunning(t, w.at(t, 7*time.Hour, onA.Id), "on host-a after 7h")
	wantStopped(t, w.at(t, 8*time.Hour, onA.Id), "stopped after 8h without activity", "on host-a after 8h")
}

// TestAutoStopRetriedStartIsANewRun: an environment whose container ended (reported STOPPED)
// (desired still RUNNING) and that its user starts again at 2h gets a new
// run: its 1h lifetime counts from then, not from the first start.
func TestAutoStopRetriedStartIsANewRun(t *testing.T) {
	w := newAutoStopWorld(t, nil)
	env := w.running(t, "flaky", "small", &covev1.Timeouts{MaxLifetimeSeconds: 3600})
	w.clock.set(w.t0.Add(30 * time.Minute))
	st := &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED, ObservedSpecVersion: env.GetSpec().GetSpecVersion()}
	if _, err := w.runner.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id, Status: st})); err != nil {
		t.Fatal(err)
	}
	w.clock.set(w.t0.Add(2 * time.Hour))
	w.setPhase(t, env.Id, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING)
	w.report(t, env.Id, nil)
	wantRunning(t, w.at(t, 2*time.Hour+59*time.Minute, env.Id), "59 min into the retried run")
	wantStopped(t, w.at(t, 3*time.Hour, env.Id), "stopped after its maximum lifetime of 1h", "1h into the retried run")
}
