package runner

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// releasedSalvage is the copy the server sends a runner an environment
// left while it lives on (internal/server/releases.go): DELETED, with
// spec.salvage.
func releasedSalvage(env *covev1.Environment, salvage bool) *covev1.Environment {
	rel := released(env)
	rel.Spec.SpecVersion = env.Spec.SpecVersion + 1
	rel.Spec.Salvage = salvage
	return rel
}

// backupFile is the content of the file whose path ends in suffix in
// backup name of srv's storage ("" with ok false if it holds none).
func backupFile(t *testing.T, srv *backupServer, name, suffix string) (string, bool) {
	t.Helper()
	store, err := localblob.New(srv.storage, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	key, err := backuprepo.ParseKey(srv.key)
	if err != nil {
		t.Fatal(err)
	}
	repo := backuprepo.New(store, key, nil)
	m, err := repo.OpenManifest(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	for {
		e, err := m.Next()
		if errors.Is(err, io.EOF) {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(e.Path, suffix) && e.Type == backuprepo.TypeFile {
			var b bytes.Buffer
			if err := repo.ReadFile(context.Background(), e, &b); err != nil {
				t.Fatal(err)
			}
			return b.String(), true
		}
	}
}

func gone(t *testing.T, dir string) bool {
	t.Helper()
	_, err := os.Stat(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return errors.Is(err, os.ErrNotExist)
}

// TestReleasedCopySalvagedBeforeDeleted: the environment ran here after
// its last backup (work the server's records lack); its copy comes back
// released with spec.salvage. The runner backs it up (trigger salvage,
// incremental from its last backup), the server records it, and only then
// is the copy deleted: the report reached the server while the copy was
// still on disk, and the backup holds the new work.
func TestReleasedCopySalvagedBeforeDeleted(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/unsaved.txt"), "the only copy\n")
	var dirAtReport []bool
	srv.mu.Lock()
	srv.onReport = func(b *covev1.Backup) error {
		dirAtReport = append(dirAtReport, !gone(t, lay.Dir))
		return releasedOnly(b)
	}
	srv.mu.Unlock()

	rel := releasedSalvage(env, true)
	if err := c.reconcileUntil(backupRunner(c), rel); err != nil {
		t.Fatal(err)
	}
	got := srv.backups()
	if len(got) != 2 || got[1].GetTrigger() != triggerSalvage || got[1].GetPrevious() != got[0].GetId() || got[1].GetEnvironmentId() != env.Id {
		t.Fatalf("reported %v; want the stop's backup, then a salvage incremental from it", got)
	}
	if s, ok := backupFile(t, srv, got[1].GetId(), "app/unsaved.txt"); !ok || s != "the only copy\n" {
		t.Fatalf("the salvage holds unsaved.txt %v: %q", ok, s)
	}
	if len(dirAtReport) != 1 || !dirAtReport[0] {
		t.Fatalf("copy on disk when the salvage was reported: %v; want it kept until then", dirAtReport)
	}
	if !gone(t, lay.Dir) {
		t.Fatal("the copy was not deleted once its salvage was recorded")
	}
	if last := c.srv.last[env.Id]; last.GetPhase() != phaseDeleted {
		t.Fatalf("last status %v, want DELETED", last.GetPhase())
	}
}

// TestReleasedCopyUnchangedNotSalvaged: a copy stopped with a backup
// recorded and not run since is deleted at once, no backup taken.
func TestReleasedCopyUnchangedNotSalvaged(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	lay := c.runner(0, false).layout(env.Id)
	if err := c.reconcileUntil(backupRunner(c), releasedSalvage(env, true)); err != nil {
		t.Fatal(err)
	}
	if got := srv.backups(); len(got) != 1 {
		t.Fatalf("reported %v, want only the stop's backup", got)
	}
	if ms := manifests(t, srv.storage); len(ms) != 1 {
		t.Fatalf("storage holds %v, want only the stop's backup", ms)
	}
	if !gone(t, lay.Dir) {
		t.Fatal("the copy was not deleted")
	}
}

// TestDeletedEnvironmentCopyNotSalvaged: the environment was deleted (by
// its owner) while this runner was away: its copy, with new work, is just
// deleted — no backup of what the user deleted.
func TestDeletedEnvironmentCopyNotSalvaged(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/unsaved.txt"), "deleted by its owner\n")
	if err := c.reconcileUntil(backupRunner(c), releasedSalvage(env, false)); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	calls := srv.accessCalls
	srv.mu.Unlock()
	if got := srv.backups(); len(got) != 0 || calls != 0 {
		t.Fatalf("reported %v after %d access calls; want no backup of a deleted environment", got, calls)
	}
	if !gone(t, lay.Dir) {
		t.Fatal("the copy was not deleted")
	}
}

// TestUnreportedBackupReportedAsSalvage: the copy's last backup was
// taken but never recorded (the server was unreachable when it stopped)
// and nothing changed since: that backup, in storage, is what the server
// is told of as the salvage — without it the copy's work would be in no
// record — and the copy is deleted after.
func TestUnreportedBackupReportedAsSalvage(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	srv.mu.Lock()
	srv.refuse = true
	srv.mu.Unlock()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	stored := manifests(t, srv.storage)
	if len(stored) != 1 || len(srv.backups()) != 0 {
		t.Fatalf("storage %v, reported %v: want one unreported backup", stored, srv.backups())
	}
	srv.mu.Lock()
	srv.refuse = false
	srv.onReport = releasedOnly
	srv.mu.Unlock()
	lay := c.runner(0, false).layout(env.Id)
	if err := c.reconcileUntil(backupRunner(c), releasedSalvage(env, true)); err != nil {
		t.Fatal(err)
	}
	got := srv.backups()
	if len(got) != 1 || got[0].GetId() != stored[0] || got[0].GetTrigger() != triggerSalvage {
		t.Fatalf("reported %v; want %s as the salvage", got, stored[0])
	}
	if !gone(t, lay.Dir) {
		t.Fatal("the copy was not deleted")
	}
}

// TestSalvageFailureKeepsTheCopy: the backup storage (or the server) is
// down when the released copy is to be salvaged: the copy is kept,
// stopped, the failure recorded with when it is tried again, and no
// attempt is made before then; once storage is back the salvage is
// taken and the copy deleted. A report the server cannot take keeps it
// too.
func TestSalvageFailureKeepsTheCopy(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/unsaved.txt"), "keep me\n")
	srv.mu.Lock()
	srv.accessFails, srv.onReport = 1<<20, releasedOnly
	srv.mu.Unlock()
	rel := releasedSalvage(env, true)
	r := backupRunner(c)
	err := c.reconcileUntil(r, rel)
	var ra *retryAtError
	if !errors.As(err, &ra) || !strings.Contains(err.Error(), "the copy is kept") {
		t.Fatalf("salvage with storage down: %v; want a failure that keeps the copy, with a retry time", err)
	}
	st, lerr := loadState(lay.State())
	if lerr != nil {
		t.Fatalf("the copy's state is gone: %v", lerr)
	}
	if _, serr := os.Stat(filepath.Join(lay.Workspace(), "app/unsaved.txt")); serr != nil {
		t.Fatalf("the unsaved work is gone: %v", serr)
	}
	if s, live := running(c.rt, env.Id); live {
		t.Errorf("the released copy's container is %s, want stopped", s.Status)
	}
	sv := st.Backup.Salvage
	if sv.Failures != 1 || sv.FailingSince.IsZero() || !sv.NextAttempt.After(time.Now()) || !ra.at.Equal(sv.NextAttempt) || sv.LastError == "" {
		t.Fatalf("salvage state %+v (retry at %v); want one failure, a retry time ahead, the reason", sv, ra.at)
	}
	// Before that time: no new attempt.
	srv.mu.Lock()
	calls := srv.accessCalls
	srv.mu.Unlock()
	if err := c.reconcileUntil(r, rel); !errors.As(err, &ra) {
		t.Fatalf("pass before the retry time: %v", err)
	}
	srv.mu.Lock()
	again := srv.accessCalls
	srv.mu.Unlock()
	if again != calls {
		t.Fatalf("%d access calls before the retry time, want none", again-calls)
	}

	// Storage back, the report refused for a while: still kept.
	dueNow(t, lay.State())
	srv.mu.Lock()
	srv.accessFails, srv.refuseCode = 0, connect.CodeUnavailable
	srv.mu.Unlock()
	if err := c.reconcileUntil(r, rel); !errors.As(err, &ra) {
		t.Fatalf("salvage whose report is refused: %v; want kept, retried later", err)
	}
	if gone(t, lay.Dir) {
		t.Fatal("the copy was deleted although the server did not record its salvage")
	}
	// All back: salvaged, then deleted.
	dueNow(t, lay.State())
	srv.mu.Lock()
	srv.refuseCode = 0
	srv.mu.Unlock()
	if err := c.reconcileUntil(r, rel); err != nil {
		t.Fatal(err)
	}
	got := srv.backups()
	if len(got) != 1 || got[0].GetTrigger() != triggerSalvage {
		t.Fatalf("reported %v, want the salvage", got)
	}
	if s, ok := backupFile(t, srv, got[0].GetId(), "app/unsaved.txt"); !ok || s != "keep me\n" {
		t.Fatalf("the salvage holds unsaved.txt %v: %q", ok, s)
	}
	if !gone(t, lay.Dir) {
		t.Fatal("the copy was not deleted once salvaged")
	}
}

// releasedOnly refuses what the server refuses a runner the environment
// left: any report but a salvage (internal/server/salvage.go).
func releasedOnly(b *covev1.Backup) error {
	if b.GetTrigger() != triggerSalvage {
		return connect.NewError(connect.CodeNotFound, errors.New("environment is not assigned to this runner"))
	}
	return nil
}

// dueNow makes the salvage's next attempt due (the test does not wait
// out the backoff).
func dueNow(t *testing.T, path string) {
	t.Helper()
	st, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	st.Backup.Salvage.NextAttempt = time.Time{}
	if err := saveState(path, st); err != nil {
		t.Fatal(err)
	}
}

// TestSalvageBackoff: 30 s doubling per failure, at most an hour.
func TestSalvageBackoff(t *testing.T) {
	prev := time.Duration(0)
	for n := 1; n <= 20; n++ {
		d := salvageBackoff(n)
		if d < prev || d > salvageBackoffMax || (n == 1 && d != 30*time.Second) {
			t.Fatalf("backoff after %d failures: %v (previous %v)", n, d, prev)
		}
		prev = d
	}
	if prev != salvageBackoffMax {
		t.Fatalf("backoff after 20 failures: %v, want the cap %v", prev, salvageBackoffMax)
	}
}

// TestPlanSalvage: a released copy to salvage is stopped, backed up while
// its file systems are mounted (its disk mounted for it), then unmounted
// and removed; without salvage it is just deleted.
func TestPlanSalvage(t *testing.T) {
	o := observed{stateExists: true, contentReady: true, someMounted: true, container: runtime.StatusRunning, salvage: true}
	want := []step{stepStop, stepDeleteContainer, stepSalvage, stepUnmount, stepRemove}
	if got := plan(phaseDeleted, o); !slices.Equal(got, want) {
		t.Errorf("salvage: %v, want %v", got, want)
	}
	o.diskDown = true
	want = []step{stepStop, stepDeleteContainer, stepDisk, stepSalvage, stepUnmount, stepUnmountDisk, stepRemove}
	if got := plan(phaseDeleted, o); !slices.Equal(got, want) {
		t.Errorf("salvage with its disk down: %v, want %v", got, want)
	}
	o.diskDown, o.salvage = false, false
	if got := plan(phaseDeleted, o); slices.Contains(got, stepSalvage) {
		t.Errorf("no salvage asked: %v", got)
	}
	o.salvage = true
	if got := plan(phaseStopped, o); slices.Contains(got, stepSalvage) {
		t.Errorf("a stop salvages: %v", got)
	}
}

// TestUnrecordedSalvageReportedWhenAssignedAgain: the copy's salvage was
// taken but the server never recorded it, and the environment is then
// moved back to this runner (its copy not deleted yet): that backup is
// reported as the copy's stop backup, which the environment's own runner
// may report, so the restore the move asks for does not take "nothing
// changed since" an unrecorded backup for saved.
func TestUnrecordedSalvageReportedWhenAssignedAgain(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/unsaved.txt"), "keep me\n")
	srv.mu.Lock()
	srv.onReport = func(*covev1.Backup) error { return connect.NewError(connect.CodeUnavailable, errors.New("down")) }
	srv.mu.Unlock()
	rel := releasedSalvage(env, true)
	var ra *retryAtError
	if err := c.reconcileUntil(backupRunner(c), rel); !errors.As(err, &ra) {
		t.Fatalf("salvage whose report fails: %v", err)
	}
	taken := manifests(t, srv.storage)
	if len(taken) != 1 || len(srv.backups()) != 0 {
		t.Fatalf("storage %v, reported %v: want one unrecorded salvage", taken, srv.backups())
	}
	srv.mu.Lock()
	srv.onReport = nil
	srv.mu.Unlock()
	env.Spec.SpecVersion = rel.Spec.SpecVersion
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	got := srv.backups()
	if len(got) != 1 || got[0].GetId() != taken[0] || got[0].GetTrigger() != "stop" {
		t.Fatalf("reported %v; want %s, as the copy's stop backup", got, taken[0])
	}
	st, err := loadState(lay.State())
	if err != nil {
		t.Fatal(err)
	}
	if st.Backup.Salvage != (salvageState{}) || !st.Backup.Reported {
		t.Fatalf("state after being assigned again: salvage %+v, reported %v", st.Backup.Salvage, st.Backup.Reported)
	}
}
