package server_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

var subReady = covev1.SubPhase_SUB_PHASE_READY

// restoredStatus is what a runner reports once the restore spec.restore
// asks for is done (READY restore progress, its generation observed).
func restoredStatus(st *covev1.EnvironmentStatus) {
	st.BackupProgress = &covev1.BackupProgress{Operation: "restore", State: &covev1.SubStatus{Phase: subReady}}
}

// rolledBack: env running on r1 with backups good (b1) and bad (b2),
// rolled back to good by `cove env restore --backup`: the runner backed
// the bad content up first (b3, "before-restore"), restored, runs.
func rolledBack(t *testing.T, w *backupWorld) (env *covev1.Environment, good, before *covev1.Backup) {
	t.Helper()
	env = w.running(t, w.alice, "work")
	good = w.backup(env, 1, "periodic")
	if err := w.report(w.r1, good); err != nil {
		t.Fatal(err)
	}
	w.advance(10 * time.Minute)
	if err := w.report(w.r1, w.backup(env, 2, "periodic")); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Minute)
	if _, err := w.alice.envs.RestoreEnvironment(context.Background(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: env.Id, BackupId: good.Id})); err != nil {
		t.Fatal(err)
	}
	before = w.backup(env, 3, "before-restore")
	if err := w.report(w.r1, before); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Second)
	w.status(t, w.r1, env.Id, phRunning, restoredStatus)
	if lb := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); lb.GetId() != good.Id || lb.GetFiles() != good.GetFiles() {
		t.Fatalf("last backup after the rollback %v, want the restored %s (its record)", lb, good.Id)
	}
	w.advance(time.Minute)
	w.heartbeat(t, w.r1)
	w.heartbeat(t, w.r2)
	return env, good, before
}

// TestMoveAfterRollbackStartsFromRestored (REV-15, the review's
// scenario): after a rollback nothing changes; a move's stop backup finds
// nothing changed since the restored backup: the move goes ahead from
// that one, not from the newest record (the content rolled back from).
func TestMoveAfterRollbackStartsFromRestored(t *testing.T) {
	w := newBackupWorld(t, nil)
	env, good, _ := rolledBack(t, w)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r1, env.Id, phStopped, func(st *covev1.EnvironmentStatus) {
		st.BackupProgress = &covev1.BackupProgress{Operation: "backup", State: &covev1.SubStatus{Phase: subReady, Message: server.NothingChangedPrefix + good.Id}}
	})
	w.pass(t)
	e := w.get(t, w.alice, env.Id)
	if e.GetMetadata().GetRunnerId() != w.id2 || e.GetSpec().GetRestore().GetBackupId() != good.Id {
		t.Fatalf("on %q restoring %v; want moved to r2 restoring the rolled-back-to %s", e.GetMetadata().GetRunnerId(), e.GetSpec().GetRestore(), good.Id)
	}
}

// TestRescheduleAfterRollback (REV-15): r1 is lost right after a
// rollback: the environment is rescheduled from the restored backup.
// `cove env restore` without --backup picks it too; a backup recorded
// later is the latest again.
func TestRescheduleAfterRollback(t *testing.T) {
	w := newBackupWorld(t, nil)
	env, good, _ := rolledBack(t, w)
	resp, err := w.alice.envs.RestoreEnvironment(context.Background(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: env.Id}))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Msg.GetEnvironment().GetSpec().GetRestore().GetBackupId(); got != good.Id {
		t.Fatalf("`cove env restore` without --backup restores %s, want the restored %s", got, good.Id)
	}
	w.status(t, w.r1, env.Id, phRunning, restoredStatus)
	w.lose(t, 2*time.Hour+time.Minute) // past RescheduleAfter
	w.pass(t)
	e := w.get(t, w.alice, env.Id)
	if e.GetMetadata().GetRunnerId() != w.id2 || e.GetSpec().GetRestore().GetBackupId() != good.Id {
		t.Fatalf("rescheduled to %q restoring %v; want r2 restoring %s", e.GetMetadata().GetRunnerId(), e.GetSpec().GetRestore(), good.Id)
	}
	// A backup taken after the restore holds the newer content.
	w.heartbeat(t, w.r2)
	w.status(t, w.r2, env.Id, phRunning, restoredStatus)
	w.advance(time.Second)
	later := w.backup(env, 4, "periodic")
	if err := w.report(w.r2, later); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r2, env.Id, phRunning, restoredStatus) // the same report again: no change
	if lb := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); lb.GetId() != later.Id {
		t.Errorf("last backup %s after a later backup, want %s", lb.GetId(), later.Id)
	}
}

// TestMoveFromRunnerWithoutContent (REV-14): the environment's clone
// failed on r1 (it never ran, no content); the user moves it to r2. r1
// answers the move's backup request with "nothing to back up": the move
// goes ahead, and r2 creates it afresh (no restore).
func TestMoveFromRunnerWithoutContent(t *testing.T) {
	w := newBackupWorld(t, nil)
	env, err := w.alice.create("work", gitSpec("https://example.com/repo.git"))
	if err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r1, env.Id, phStopped, func(st *covev1.EnvironmentStatus) {
		st.Content = &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "clone failed"}
		st.FailureMessage = "clone failed"
	})
	w.heartbeat(t, w.r1)
	w.heartbeat(t, w.r2)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	if e := w.get(t, w.alice, env.Id); e.GetMetadata().GetRunnerId() == w.id1 {
		w.status(t, w.r1, env.Id, phStopped, func(st *covev1.EnvironmentStatus) {
			st.BackupProgress = &covev1.BackupProgress{Operation: "backup", State: &covev1.SubStatus{Phase: subReady, Message: server.NothingHeldMessage}}
		})
		w.pass(t)
	}
	e := w.get(t, w.alice, env.Id)
	if e.GetMetadata().GetRunnerId() != w.id2 || e.GetSpec().GetRestore() != nil || e.GetSpec().GetDesiredPhase() != phRunning {
		t.Fatalf("on %q, restore %v, desired %v; want moved to r2, created afresh", e.GetMetadata().GetRunnerId(), e.GetSpec().GetRestore(), e.GetSpec().GetDesiredPhase())
	}
}

// TestEmptyBackupNeverPickedAutomatically (REV-14): an environment whose
// newest backup holds no files (taken where there was no content, by a
// runner from before this fix) is moved from the newest backup that holds
// files; `cove env restore` without --backup picks that one as well, and
// refuses when only empty ones exist — a user may still name one.
func TestEmptyBackupNeverPickedAutomatically(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	good := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, good); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Minute)
	empty := w.backup(env, 2, "manual")
	empty.Files, empty.Bytes, empty.BytesNew, empty.BytesReused = 0, 0, 0, 0
	if err := w.report(w.r1, empty); err != nil {
		t.Fatal(err)
	}
	w.heartbeat(t, w.r1)
	w.heartbeat(t, w.r2)
	w.advance(time.Minute)
	if _, err := w.start(w.alice, env.Id, w.id2); err != nil {
		t.Fatal(err)
	}
	w.status(t, w.r1, env.Id, phStopped, func(st *covev1.EnvironmentStatus) {
		st.BackupProgress = &covev1.BackupProgress{Operation: "backup", State: &covev1.SubStatus{Phase: subReady, Message: server.NothingHeldMessage}}
	})
	w.pass(t)
	e := w.get(t, w.alice, env.Id)
	if e.GetMetadata().GetRunnerId() != w.id2 || e.GetSpec().GetRestore().GetBackupId() != good.Id {
		t.Fatalf("on %q restoring %v; want moved to r2 restoring %s, never the empty %s", e.GetMetadata().GetRunnerId(), e.GetSpec().GetRestore(), good.Id, empty.Id)
	}

	other, err := w.alice.create("other", gitSpec("https://example.com/repo.git"))
	if err != nil {
		t.Fatal(err)
	}
	w.status(t, w.runner(t, other), other.Id, phRunning, nil)
	onlyEmpty := w.backup(other, 1, "manual")
	onlyEmpty.Files = 0
	if err := w.report(w.runner(t, other), onlyEmpty); err != nil {
		t.Fatal(err)
	}
	_, err = w.alice.envs.RestoreEnvironment(context.Background(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: other.Id}))
	if code(err) != connect.CodeFailedPrecondition {
		t.Fatalf("restore without --backup when only an empty backup exists: %v, want FailedPrecondition", err)
	}
	if got := w.get(t, w.alice, other.Id).GetSpec().GetRestore(); got != nil {
		t.Errorf("spec.restore %v after a refused restore", got)
	}
	resp, err := w.alice.envs.RestoreEnvironment(context.Background(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: other.Id, BackupId: onlyEmpty.Id}))
	if err != nil || resp.Msg.GetEnvironment().GetSpec().GetRestore().GetBackupId() != onlyEmpty.Id {
		t.Fatalf("a named empty backup: %v", err)
	}
}
