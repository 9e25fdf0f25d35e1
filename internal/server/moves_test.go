package server_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	phRunning = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	phStopped = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
)

func (w *backupWorld) start(u *user, id, runner string) (*covev1.Environment, error) {
	resp, err := u.envs.UpdateEnvironment(context.Background(), connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: id, DesiredPhase: phRunning, RunnerId: runner}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Environment, nil
}

// pass makes one pass of the moves controller.
func (w *backupWorld) pass(t *testing.T) {
	t.Helper()
	if err := server.MovesOnce(context.Background(), w.h.srv); err != nil {
		t.Fatal(err)
	}
}

// lose makes r1 INACTIVE: the clock passes the runner timeout while r2
// keeps sending heartbeats.
func (w *backupWorld) lose(t *testing.T, d time.Duration) {
	t.Helper()
	w.advance(d)
	w.heartbeat(t, w.r2)
	if err := server.RunnersOnce(context.Background(), w.h.srv); err != nil {
		t.Fatal(err)
	}
	resp, err := w.alice.runners.ListRunners(context.Background(), connect.NewRequest(&covev1.ListRunnersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Msg.Runners {
		if r.Id == w.id1 && r.Phase != covev1.RunnerPhase_RUNNER_PHASE_INACTIVE {
			t.Fatalf("r1 is %v after %s without a heartbeat", r.Phase, d)
		}
	}
}

func wantMovedTo(t *testing.T, env *covev1.Environment, runner, backup string, gen int64) {
	t.Helper()
	r := env.GetSpec().GetRestore()
	if env.GetMetadata().GetRunnerId() != runner || env.GetSpec().GetDesiredPhase() != phRunning ||
		r.GetBackupId() != backup || r.GetGeneration() != gen || r.GetBackupFirst() {
		t.Fatalf("environment on %q desired %v restore %v; want on %s, RUNNING, restoring %s (generation %d, no backup first)",
			env.GetMetadata().GetRunnerId(), env.GetSpec().GetDesiredPhase(), r, runner, backup, gen)
	}
}

// TestMoveStopsBacksUpThenRestoresElsewhere: `cove env start --runner r2`
// of an environment running on r1 stops it there with a backup; only once
// r1 reports it STOPPED with a backup taken after the request does it go
// to r2, which restores that backup.
func TestMoveStopsBacksUpThenRestoresElsewhere(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	old := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, old); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Minute)
	got, err := w.start(w.alice, "work", "r2")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetMetadata().GetRunnerId() != w.id1 || got.GetSpec().GetDesiredPhase() != phStopped || got.GetSpec().GetBackupGeneration() != 1 ||
		!strings.Contains(got.GetSpec().GetStopReason(), `moving to runner "r2"`) {
		t.Fatalf("after the request: runner %s, spec %v; want it stopped on r1 with a backup", got.GetMetadata().GetRunnerId(), got.GetSpec())
	}
	// Stopping, not yet backed up: nothing moves.
	w.status(t, w.r1, env.Id, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPING, func(st *covev1.EnvironmentStatus) { st.ObservedBackupGeneration = 0 })
	w.pass(t)
	if e := w.get(t, w.alice, env.Id); e.GetMetadata().GetRunnerId() != w.id1 {
		t.Fatalf("moved before the stop backup: on %s", e.GetMetadata().GetRunnerId())
	}
	// r1 backs it up on stop and reports STOPPED.
	w.advance(time.Second)
	fresh := w.backup(env, 2, "stop")
	if err := w.report(w.r1, fresh); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r1, env.Id, phStopped, nil)
	w.pass(t)
	moved := w.get(t, w.alice, env.Id)
	wantMovedTo(t, moved, w.id2, fresh.Id, 1)
	if len(moved.GetStatus().GetWarnings()) != 0 {
		t.Errorf("a move from a connected runner warns %q", moved.GetStatus().GetWarnings())
	}
	// r1 may no longer report for it (its access is for one salvage of
	// its copy only, salvage_test.go); r2 may.
	if err := w.report(w.r1, w.backup(env, 3, "periodic")); code(err) != connect.CodeNotFound {
		t.Errorf("old runner's backup report after the move: %v", err)
	}
	if a, err := access(w.r2, env.Id); err != nil || len(a.Key) != 32 {
		t.Errorf("new runner's access: %v", err)
	}
	// r2 sees it among its assignments.
	testutil.WaitFor(t, "r2 to be assigned the environment", func() bool { return assigned(t, w.r2, env.Id) })
}

func assigned(t *testing.T, r covev1connect.RunnerServiceClient, id string) bool {
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	stream, err := r.WatchAssignments(ctx, connect.NewRequest(&covev1.WatchAssignmentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for stream.Receive() {
		if e := stream.Msg().GetEnvironment(); e != nil {
			return e.Id == id
		}
	}
	return false
}

// TestMoveCancelledWhenTheBackupFails: the old runner's backup fails after
// the request: the move is cancelled, the environment stays (stopped) where
// its content is, and says why.
func TestMoveCancelledWhenTheBackupFails(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	if err := w.report(w.r1, w.backup(env, 1, "periodic")); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Minute)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Second)
	w.status(t, w.r1, env.Id, phStopped, func(st *covev1.EnvironmentStatus) {
		st.ObservedBackupGeneration = 0
		st.BackupProgress = &covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.New(w.clock()),
			State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "storage full"}}
	})
	w.pass(t)
	e := w.get(t, w.alice, env.Id)
	if e.GetMetadata().GetRunnerId() != w.id1 || e.GetSpec().GetRestore() != nil || !strings.Contains(e.GetSpec().GetStopReason(), "storage full") {
		t.Fatalf("after a failed backup: runner %s, spec %v; want it left on r1 saying why", e.GetMetadata().GetRunnerId(), e.GetSpec())
	}
	w.pass(t) // the move is over: nothing more happens
	if e2 := w.get(t, w.alice, env.Id); e2.GetSpec().GetSpecVersion() != e.GetSpec().GetSpecVersion() {
		t.Fatalf("a cancelled move acted again")
	}
}

// TestMoveFromALostRunner: a move off an INACTIVE runner happens at once,
// from the latest backup, and says what may be lost; without a backup of a
// started environment it is refused and nothing changes.
func TestMoveFromALostRunner(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	bare := w.running(t, w.alice, "bare")
	if bare.GetMetadata().GetRunnerId() != w.id2 {
		t.Fatalf("bare on %s", bare.GetMetadata().GetRunnerId())
	}
	b := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, b); err != nil {
		t.Fatal(err)
	}
	w.lose(t, 2*time.Hour-time.Minute) // not yet long enough for a reschedule
	moved, err := w.start(w.alice, "work", "r2")
	if err != nil {
		t.Fatal(err)
	}
	wantMovedTo(t, moved, w.id2, b.Id, 1)
	warn := strings.Join(moved.GetStatus().GetWarnings(), "\n")
	if !strings.Contains(warn, `changes made on "r1" after `+b.Time.AsTime().UTC().Format(time.RFC3339)) {
		t.Fatalf("warning %q does not say what may be lost", warn)
	}
	// It stays through the new runner's reports, until another restore.
	w.status(t, w.r2, moved.Id, phRunning, func(st *covev1.EnvironmentStatus) { st.Warnings = []string{"a runner's own warning"} })
	if got := w.get(t, w.alice, moved.Id).GetStatus().GetWarnings(); len(got) != 2 || !slices.Contains(got, warn) {
		t.Fatalf("after the new runner's report: warnings %q; want the move's kept", got)
	}
	if _, err := w.alice.envs.RestoreEnvironment(context.Background(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: moved.Id})); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r2, moved.Id, phRunning, nil)
	if got := w.get(t, w.alice, moved.Id).GetStatus().GetWarnings(); len(got) != 0 {
		t.Fatalf("after a later restore: warnings %q; want none", got)
	}

	// Bob's started environment on r1 without a backup stays.
	w.advance(time.Second)
	lostBare := w.runningOn(t, w.bob, "lost", w.r1, w.id1)
	_, err = w.start(w.bob, lostBare.Id, "r2")
	if code(err) != connect.CodeFailedPrecondition || !strings.Contains(message(err), "no backup") {
		t.Fatalf("move without a backup: %v", err)
	}
	if e := w.get(t, w.bob, lostBare.Id); e.GetMetadata().GetRunnerId() != w.id1 || e.GetSpec().GetRestore() != nil {
		t.Fatalf("a refused move changed it: %v", e.GetMetadata())
	}
}

// runningOn stores an environment of u assigned to runner id as if it had
// been started there (the runner is lost, so the scheduler would not).
func (w *backupWorld) runningOn(t *testing.T, u *user, name string, r covev1connect.RunnerServiceClient, id string) *covev1.Environment {
	t.Helper()
	env, err := u.create(name, gitSpec("https://example.com/repo.git"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.UpdateEnvironment(context.Background(), env.Id, func(e *covev1.Environment) error {
		e.Metadata.RunnerId = id
		e.Metadata.StartedAt = timestamppb.New(w.clock())
		e.Status.Phase = phRunning
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return w.get(t, u, env.Id)
}

// TestRescheduleFromALostRunner: an environment that should run, on a
// runner INACTIVE for longer than RescheduleAfter, moves to another runner
// from its latest backup; one without a backup waits for its runner; a
// deletion completes without the runner and keeps the backups.
func TestRescheduleFromALostRunner(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	w.running(t, w.alice, "filler") // on r2: r1 gets the next ones
	gone := w.running(t, w.alice, "gone")
	if gone.GetMetadata().GetRunnerId() != w.id1 {
		t.Fatalf("gone on %s", gone.GetMetadata().GetRunnerId())
	}
	b := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, b); err != nil {
		t.Fatal(err)
	}
	g := w.backup(gone, 1, "periodic")
	if err := w.report(w.r1, g); err != nil {
		t.Fatal(err)
	}
	bare := w.runningOn(t, w.bob, "bare", w.r1, w.id1)
	if _, err := w.alice.envs.DeleteEnvironment(context.Background(), connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: gone.Id})); err != nil {
		t.Fatal(err)
	}

	w.lose(t, time.Hour+time.Minute) // INACTIVE, not yet for RescheduleAfter
	w.pass(t)
	for _, e := range []*covev1.Environment{w.get(t, w.alice, env.Id), w.get(t, w.bob, bare.Id)} {
		if e.GetMetadata().GetRunnerId() != w.id1 {
			t.Fatalf("%s moved before RescheduleAfter", e.GetMetadata().GetName())
		}
	}
	if p := w.get(t, w.alice, gone.Id).GetStatus().GetPhase(); p == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED {
		t.Fatal("deletion completed before RescheduleAfter")
	}

	w.lose(t, time.Hour) // now 2h+1m without a heartbeat
	w.pass(t)
	moved := w.get(t, w.alice, env.Id)
	wantMovedTo(t, moved, w.id2, b.Id, 1)
	if !strings.Contains(strings.Join(moved.GetStatus().GetWarnings(), "\n"), "are not in it") {
		t.Errorf("rescheduled without saying what may be lost: %q", moved.GetStatus().GetWarnings())
	}
	if e := w.get(t, w.bob, bare.Id); e.GetMetadata().GetRunnerId() != w.id1 {
		t.Errorf("an environment without a backup was rescheduled (to %s): its content is only on r1", e.GetMetadata().GetRunnerId())
	}
	resp, err := w.alice.envs.ListEnvironments(context.Background(), connect.NewRequest(&covev1.ListEnvironmentsRequest{IncludeDeleted: true}))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.Msg.Environments {
		if e.Id == gone.Id && e.GetStatus().GetPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED {
			t.Fatalf("deletion on a lost runner: phase %v", e.GetStatus().GetPhase())
		}
	}
	kept, err := w.store.ListBackups(context.Background(), gone.Id)
	if err != nil || len(kept) != 1 {
		t.Fatalf("backups of the deleted environment: %v, %v; want kept until retention", kept, err)
	}
}

// TestMoveRefusals: a target that is unknown, not connected or the
// environment's own runner; a move with desired STOPPED.
func TestMoveRefusals(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	if _, err := w.start(w.alice, env.Id, "nowhere"); code(err) != connect.CodeNotFound {
		t.Errorf("unknown runner: %v", err)
	}
	_, err := w.alice.envs.UpdateEnvironment(context.Background(), connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: env.Id, DesiredPhase: phStopped, RunnerId: "r2"}))
	if code(err) != connect.CodeInvalidArgument {
		t.Errorf("stop with a runner: %v", err)
	}
	// Its own runner: a plain start.
	got, err := w.start(w.alice, env.Id, "r1")
	if err != nil || got.GetMetadata().GetRunnerId() != w.id1 || got.GetSpec().GetBackupGeneration() != 0 {
		t.Errorf("start on its own runner: %v, %v", err, got.GetSpec())
	}
	// r2 lost: not a target.
	w.advance(2 * time.Hour)
	w.heartbeat(t, w.r1)
	if err := server.RunnersOnce(context.Background(), w.h.srv); err != nil {
		t.Fatal(err)
	}
	if _, err := w.start(w.alice, env.Id, "r2"); code(err) != connect.CodeFailedPrecondition || !strings.Contains(message(err), "not connected") {
		t.Errorf("move to a lost runner: %v", err)
	}
	if _, err := w.start(w.bob, env.Id, "r2"); code(err) != connect.CodeNotFound {
		t.Errorf("bob moves alice's environment: %v", err)
	}
}

// TestRemovedRunnersEnvironmentStartsFromItsBackup: an environment of a
// removed runner, started again, goes to another runner and restores its
// latest backup instead of starting afresh from its source.
func TestRemovedRunnersEnvironmentStartsFromItsBackup(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	b := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, b); err != nil {
		t.Fatal(err)
	}
	if _, err := w.alice.runners.DeleteRunner(context.Background(), connect.NewRequest(&covev1.DeleteRunnerRequest{Id: "r1"})); err != nil {
		t.Fatal(err)
	}
	if _, err := w.start(w.alice, env.Id, ""); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the environment to be scheduled", func() bool { return w.get(t, w.alice, env.Id).GetMetadata().GetRunnerId() != "" })
	wantMovedTo(t, w.get(t, w.alice, env.Id), w.id2, b.Id, 1)
}
