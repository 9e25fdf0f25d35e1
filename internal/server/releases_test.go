package server_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"google.golang.org/protobuf/proto"
)

const phDeleted = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED

// releaseOn opens runner r's assignment watch from revision 0, as a runner
// (re)starting does, and returns the first released copy of environment id
// it is sent (the test's deadline fails it if none comes).
func releaseOn(t *testing.T, r covev1connect.RunnerServiceClient, id string) *covev1.Environment {
	t.Helper()
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	stream, err := r.WatchAssignments(ctx, connect.NewRequest(&covev1.WatchAssignmentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for stream.Receive() {
		if e := stream.Msg().GetEnvironment(); e != nil && e.Id == id && e.GetSpec().GetDesiredPhase() == phDeleted && e.GetStatus() == nil {
			return e
		}
	}
	t.Fatalf("the runner's watch ended without the release of %s: %v", id, stream.Err())
	return nil
}

// wantReleaseCopy: the released copy tells the old runner to delete its
// copy, assigned to it, and nothing of where the environment went.
func wantReleaseCopy(t *testing.T, e *covev1.Environment, runner string) {
	t.Helper()
	if e.GetMetadata().GetRunnerId() != runner || e.GetSpec().GetDesiredPhase() != phDeleted || e.GetSpec().GetRestore() != nil ||
		e.GetSpec().GetContent() != nil || len(e.GetSpec().GetLocalEnv()) != 0 || e.Revision != 0 {
		t.Fatalf("released copy: runner %q spec %v revision %d; want assigned to %s, DELETED and nothing else, revision 0",
			e.GetMetadata().GetRunnerId(), e.GetSpec(), e.Revision, runner)
	}
}

func (w *backupWorld) releases(t *testing.T, runner string) []string {
	t.Helper()
	rels, err := w.store.ListReleases(context.Background(), runner)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rels {
		ids = append(ids, r.EnvironmentID)
	}
	return ids
}

// TestReleaseAfterRescheduleOffALostRunner (review REV-1): an environment
// is rescheduled off r1, lost (partitioned) for longer than
// RescheduleAfter, and runs on r2. When r1 comes back, its assignment
// watch sends it the environment to delete; r1's reports about it
// (RUNNING, as its stale copy would) are accepted without error but
// change nothing of the environment's status on r2; its DELETED report
// ends the release; its backup access is granted for its one salvage
// only, and refused once the release ended.
func TestReleaseAfterRescheduleOffALostRunner(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	w.running(t, w.alice, "filler") // on r2
	if env.GetMetadata().GetRunnerId() != w.id1 {
		t.Fatalf("work on %s", env.GetMetadata().GetRunnerId())
	}
	if err := w.report(w.r1, w.backup(env, 1, "periodic")); err != nil {
		t.Fatal(err)
	}
	w.lose(t, 2*time.Hour+time.Minute)
	w.pass(t)
	if got := w.get(t, w.alice, env.Id); got.GetMetadata().GetRunnerId() != w.id2 {
		t.Fatalf("not rescheduled: on %s", got.GetMetadata().GetRunnerId())
	}
	w.status(t, w.r2, env.Id, phRunning, nil)
	onR2 := w.get(t, w.alice, env.Id)

	// r1 comes back (a restarted runner watches from revision 0).
	w.heartbeat(t, w.r1)
	wantReleaseCopy(t, releaseOn(t, w.r1, env.Id), w.id1)

	// Its stale copy still reports RUNNING: no error (it would retry for
	// ever), no effect.
	resp, err := w.r1.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: phRunning, FailureMessage: "r1 was here", ObservedSpecVersion: 1 << 40}}))
	if err != nil {
		t.Fatalf("old runner's report of its released copy: %v", err)
	}
	wantReleaseCopy(t, resp.Msg.Environment, w.id1)
	if got := w.get(t, w.alice, env.Id); !proto.Equal(got.GetStatus(), onR2.GetStatus()) || got.GetMetadata().GetRunnerId() != w.id2 {
		t.Fatalf("the old runner's report changed the environment: status %v on %s; want %v on r2", got.GetStatus(), got.GetMetadata().GetRunnerId(), onR2.GetStatus())
	}
	if ids := w.releases(t, w.id1); len(ids) != 1 || ids[0] != env.Id {
		t.Fatalf("a RUNNING report ended the release: %v", ids)
	}
	// Backup access: for its one salvage of the copy only (salvage.go,
	// salvage_test.go), until the release ends.
	if _, err := access(w.r1, env.Id); err != nil {
		t.Fatalf("the old runner's backup access for the salvage: %v", err)
	}

	// It deletes its copy and says so: the release ends, the environment
	// on r2 is untouched.
	if _, err := w.r1.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: phDeleted}})); err != nil {
		t.Fatalf("old runner's DELETED report: %v", err)
	}
	if ids := w.releases(t, w.id1); len(ids) != 0 {
		t.Fatalf("releases of r1 after its DELETED report: %v", ids)
	}
	if _, err := access(w.r1, env.Id); err == nil {
		t.Fatal("the old runner got the backup key of an environment whose release ended")
	}
	if got := w.get(t, w.alice, env.Id); !proto.Equal(got.GetStatus(), onR2.GetStatus()) || got.GetSpec().GetDesiredPhase() != phRunning {
		t.Fatalf("the old runner's DELETED report changed the environment: %v", got)
	}
	// The owner deletes it later: that is r2's business, r1 has nothing left.
	if _, err := w.alice.envs.DeleteEnvironment(context.Background(), connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: env.Id})); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r2, env.Id, phDeleted, nil)
	if _, err := w.r1.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: phRunning}})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("old runner's report after the release ended: %v, want PermissionDenied", err)
	}
}

// TestReleaseAfterPlannedMove: `cove env start --runner r2` stops the
// environment on r1 with a backup and starts it on r2; r1's watch, open
// all along, is then sent the environment to delete.
func TestReleaseAfterPlannedMove(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	stream, err := w.r1.WatchAssignments(ctx, connect.NewRequest(&covev1.WatchAssignmentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	got := make(chan *covev1.Environment, 1)
	go func() {
		defer close(got)
		for stream.Receive() {
			if e := stream.Msg().GetEnvironment(); e != nil && e.Id == env.Id && e.GetStatus() == nil {
				got <- e
				return
			}
		}
	}()
	if _, err := w.start(w.alice, "work", "r2"); err != nil {
		t.Fatal(err)
	}
	fresh := w.backup(env, 1, "stop")
	if err := w.report(w.r1, fresh); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r1, env.Id, phStopped, nil)
	w.pass(t)
	wantMovedTo(t, w.get(t, w.alice, env.Id), w.id2, fresh.Id, 1)
	rel, ok := <-got
	if !ok {
		t.Fatalf("r1's watch ended without the release: %v", stream.Err())
	}
	wantReleaseCopy(t, rel, w.id1)
	if _, err := w.r1.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: phDeleted}})); err != nil {
		t.Fatal(err)
	}
	if ids := w.releases(t, w.id1); len(ids) != 0 {
		t.Fatalf("releases of r1 after its DELETED report: %v", ids)
	}
	// Moving it back to r1 is no release of r1.
	w.status(t, w.r2, env.Id, phRunning, nil)
	if _, err := w.start(w.alice, "work", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := w.report(w.r2, w.backup(env, 2, "stop")); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r2, env.Id, phStopped, nil)
	w.pass(t)
	if e := w.get(t, w.alice, env.Id); e.GetMetadata().GetRunnerId() != w.id1 {
		t.Fatalf("not moved back: on %s", e.GetMetadata().GetRunnerId())
	}
	if r1, r2 := w.releases(t, w.id1), w.releases(t, w.id2); len(r1) != 0 || len(r2) != 1 {
		t.Fatalf("after the move back: releases r1 %v r2 %v; want none on r1, one on r2", r1, r2)
	}
	w.status(t, w.r1, env.Id, phRunning, nil) // r1 runs it again: its reports count
	if p := w.get(t, w.alice, env.Id).GetStatus().GetPhase(); p != phRunning {
		t.Fatalf("r1's report after the move back: phase %v", p)
	}
}

// TestReleaseAfterDeletionWithoutTheRunner (review REV-1 variant): an
// environment deleted while its runner was lost is deleted without it;
// when that runner restarts (watching from revision 0, whose listing
// leaves deleted environments out), it is still sent the environment to
// delete, and its DELETED report is accepted.
func TestReleaseAfterDeletionWithoutTheRunner(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	if _, err := w.alice.envs.DeleteEnvironment(context.Background(), connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: env.Id})); err != nil {
		t.Fatal(err)
	}
	w.lose(t, 2*time.Hour+time.Minute)
	w.pass(t)
	if ids := w.releases(t, w.id1); len(ids) != 1 || ids[0] != env.Id {
		t.Fatalf("releases after the deletion without r1: %v", ids)
	}
	w.heartbeat(t, w.r1)
	wantReleaseCopy(t, releaseOn(t, w.r1, env.Id), w.id1)
	if _, err := w.r1.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id,
		Status: &covev1.EnvironmentStatus{Phase: phDeleted}})); err != nil {
		t.Fatalf("the runner's DELETED report: %v", err)
	}
	if ids := w.releases(t, w.id1); len(ids) != 0 {
		t.Fatalf("releases after the runner's DELETED report: %v", ids)
	}
}
