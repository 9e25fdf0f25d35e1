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

// Review REV-12, REV-4 and REV-13: a move goes ahead only on a backup of
// the content as stopped; the server alone decides an environment's last
// backup, by its own clock; a backup is recorded only if its manifest is
// in storage.

func failedBackup(at time.Time, msg string) *covev1.BackupProgress {
	return &covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.New(at),
		State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: msg}}
}

// TestMoveCancelledWhenStopBackupFailsWithGenerationObserved (REV-12): the
// runner reports STOPPED with the move's backup generation observed and
// its stop backup FAILED, as its backup step does; the move must not
// restore the older backup on r2: it is cancelled, the environment stays
// on r1, stopped, saying why, with no restore.
func TestMoveCancelledWhenStopBackupFailsWithGenerationObserved(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	old := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, old); err != nil {
		t.Fatal(err)
	}
	w.advance(20 * time.Minute) // work since that backup
	w.heartbeat(t, w.r1)
	w.heartbeat(t, w.r2)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Second)
	// The runner's clock behind: the failure "started" before the request
	// by its clock. With the generation observed it is the move's all the same.
	w.status(t, w.r1, env.Id, phStopped, func(st *covev1.EnvironmentStatus) {
		st.BackupProgress = failedBackup(w.clock().Add(-time.Hour), "backup failed: storage full")
	})
	w.pass(t)
	e := w.get(t, w.alice, env.Id)
	if e.GetMetadata().GetRunnerId() != w.id1 || e.GetSpec().GetDesiredPhase() != phStopped || e.GetSpec().GetRestore() != nil ||
		!strings.Contains(e.GetSpec().GetStopReason(), "storage full") || !strings.Contains(e.GetSpec().GetStopReason(), "cancelled") {
		t.Fatalf("after a failed stop backup: runner %s (r1 %s), spec %v; want it stopped on r1, no restore, the failure said",
			e.GetMetadata().GetRunnerId(), w.id1, e.GetSpec())
	}
	if moves, err := w.store.ListMoves(context.Background()); err != nil || len(moves) != 0 {
		t.Fatalf("moves pending after the cancel: %v (%v)", moves, err)
	}
	w.pass(t)
	if e2 := w.get(t, w.alice, env.Id); e2.GetMetadata().GetRunnerId() != w.id1 || e2.GetSpec().GetRestore() != nil {
		t.Fatalf("the cancelled move acted later: on %s restoring %v", e2.GetMetadata().GetRunnerId(), e2.GetSpec().GetRestore())
	}
}

// TestMoveWaitsForTheStopBackupsRecord (REV-12): STOPPED with the
// generation observed but no backup recorded since the request (its report
// not arrived yet) does not move; the record's arrival moves it from that
// backup.
func TestMoveWaitsForTheStopBackupsRecord(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	if err := w.report(w.r1, w.backup(env, 1, "periodic")); err != nil {
		t.Fatal(err)
	}
	w.advance(20 * time.Minute)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Second)
	w.status(t, w.r1, env.Id, phStopped, nil)
	w.pass(t)
	if e := w.get(t, w.alice, env.Id); e.GetMetadata().GetRunnerId() != w.id1 || e.GetSpec().GetRestore() != nil {
		t.Fatalf("moved to %s restoring %v without a backup taken after the request", e.GetMetadata().GetRunnerId(), e.GetSpec().GetRestore())
	}
	fresh := w.backup(env, 2, "stop")
	if err := w.report(w.r1, fresh); err != nil {
		t.Fatal(err)
	}
	w.pass(t)
	wantMovedTo(t, w.get(t, w.alice, env.Id), w.id2, fresh.Id, 1)
}

// TestMoveWhenNothingChanged (REV-12): a runner that says nothing changed
// since the newest recorded backup (READY "skipped: nothing changed since
// <id>") moves it from that backup; naming an older one does not.
func TestMoveWhenNothingChanged(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	b1, b2 := w.backup(env, 1, "periodic"), w.backup(env, 2, "stop")
	if err := w.report(w.r1, b1); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Minute)
	if err := w.report(w.r1, b2); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r1, env.Id, phStopped, nil)
	w.advance(time.Minute)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	skipped := func(since string) func(*covev1.EnvironmentStatus) {
		return func(st *covev1.EnvironmentStatus) {
			st.BackupProgress = &covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.New(w.clock()),
				State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_READY, Message: "skipped: nothing changed since " + since}}
		}
	}
	w.status(t, w.r1, env.Id, phStopped, skipped(b1.Id))
	w.pass(t)
	if e := w.get(t, w.alice, env.Id); e.GetMetadata().GetRunnerId() != w.id1 {
		t.Fatalf("moved on 'nothing changed since' an older backup than the newest record")
	}
	w.status(t, w.r1, env.Id, phStopped, skipped(b2.Id))
	w.pass(t)
	wantMovedTo(t, w.get(t, w.alice, env.Id), w.id2, b2.Id, 1)
}

// TestBackupFromARunnerClockAhead (REV-4): a runner whose clock is 2 min
// ahead has its backup recorded (not refused), with the server's time, so
// it does not outrank a backup the server receives later.
func TestBackupFromARunnerClockAhead(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	ahead := w.backup(env, 1, "periodic")
	ahead.Time = timestamppb.New(w.clock().Add(2 * time.Minute))
	if err := w.report(w.r1, ahead); err != nil {
		t.Fatalf("a backup from a runner clock ahead: %v; want it recorded", err)
	}
	got, err := w.list(t, w.alice, env.Id)
	if err != nil || len(got) != 1 || got[0].GetId() != ahead.Id || !got[0].GetTime().AsTime().Equal(w.clock()) {
		t.Fatalf("backups %v (%v); want %s at the server's time %s", got, err, ahead.Id, w.clock())
	}
	w.advance(time.Minute)
	next := w.backup(env, 2, "periodic")
	if err := w.report(w.r1, next); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.list(t, w.alice, env.Id); len(got) != 2 || got[0].GetId() != next.Id {
		t.Fatalf("backups %v; want %s (received last) first", got, next.Id)
	}
	if last := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); last.GetId() != next.Id {
		t.Fatalf("last backup %v; want %s", last, next.Id)
	}
}

// TestLatestBackupByServerReceiveTime (REV-4 variant): after a move to a
// runner whose clock is 10 min behind, its backup (taken, by its clock,
// before r1's) is still the latest: restores, moves and last_backup follow
// the server's order of receipt.
func TestLatestBackupByServerReceiveTime(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	b1 := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, b1); err != nil {
		t.Fatal(err)
	}
	w.advance(5 * time.Minute)
	b2 := w.backup(env, 2, "periodic")
	b2.Time = timestamppb.New(w.clock().Add(-10 * time.Minute)) // a clock behind
	if err := w.report(w.r1, b2); err != nil {
		t.Fatal(err)
	}
	got, err := w.list(t, w.alice, env.Id)
	if err != nil || len(got) != 2 || got[0].GetId() != b2.Id {
		t.Fatalf("backups %v (%v); want %s (reported second) first", got, err, b2.Id)
	}
	if last := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); last.GetId() != b2.Id {
		t.Fatalf("last backup %s; want %s", last.GetId(), b2.Id)
	}
	// A move from a lost runner starts from it.
	w.lose(t, time.Hour)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	if e := w.get(t, w.alice, env.Id); e.GetSpec().GetRestore().GetBackupId() != b2.Id {
		t.Fatalf("moved restoring %v; want %s", e.GetSpec().GetRestore(), b2.Id)
	}
}

// TestLastBackupNotTakenFromRunnerStatus (REV-4): a runner's status naming
// another environment's backup (bob's), or an unrecorded future one, as
// alice's last backup changes nothing: last_backup stays the server's
// latest record of alice's environment.
func TestLastBackupNotTakenFromRunnerStatus(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	theirs := w.running(t, w.bob, "theirs")
	mine := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, mine); err != nil {
		t.Fatal(err)
	}
	bobs := w.backup(theirs, 9, "periodic")
	if err := w.report(w.runner(t, theirs), bobs); err != nil {
		t.Fatal(err)
	}
	for _, claim := range []*covev1.Backup{
		{Id: bobs.Id, EnvironmentId: theirs.Id, Time: timestamppb.New(w.clock().Add(time.Hour)), Trigger: "stop"},
		{Id: env.Id + "/never-recorded", EnvironmentId: env.Id, Time: timestamppb.New(w.clock().Add(time.Hour)), Trigger: "stop"},
	} {
		w.status(t, w.r1, env.Id, phRunning, func(st *covev1.EnvironmentStatus) { st.LastBackup = claim })
		if last := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); last.GetId() != mine.Id || !last.GetTime().AsTime().Equal(mine.GetTime().AsTime()) {
			t.Fatalf("after a status claiming %s: last backup %v; want the record %s", claim.Id, last, mine.Id)
		}
	}
}

// TestReportBackupNeedsItsManifest (REV-13): a runner reporting a backup
// whose manifest is not in storage (deleted as an orphan while it was
// away) is refused with FailedPrecondition naming the backup; nothing is
// recorded, so no move or restore picks it.
func TestReportBackupNeedsItsManifest(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	kept := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, kept); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Minute)
	gone := w.backup(env, 2, "periodic")
	err := w.reportOnly(w.r1, gone)
	if code(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), gone.Id) {
		t.Fatalf("report of a backup without its manifest: %v; want failed_precondition naming it", err)
	}
	got, err := w.list(t, w.alice, env.Id)
	if err != nil || len(got) != 1 || got[0].GetId() != kept.Id {
		t.Fatalf("backups %v (%v); want only %s", got, err, kept.Id)
	}
	if last := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); last.GetId() != kept.Id {
		t.Fatalf("last backup %s; want %s", last.GetId(), kept.Id)
	}
}
