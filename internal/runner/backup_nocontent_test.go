package runner

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// loseContent leaves env's state as a runner's whose clone or restore
// failed (rolled back): no content, trees removed, no backup of its own.
func loseContent(t *testing.T, r *Runner, env *covev1.Environment) {
	t.Helper()
	lay := r.layout(env.Id)
	st, err := loadState(lay.State())
	if err != nil {
		t.Fatal(err)
	}
	st.Content.Ready = false
	st.Backup.Last, st.Backup.Dirty = nil, false
	if err := saveState(lay.State(), st); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{lay.Workspace(), lay.Upper(), lay.Volumes()} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBackupWithoutContentTakesNone (REV-14): a runner that holds no
// content for the environment is asked for a backup (a move's, or `cove
// env backup`): it takes and reports none — an empty backup would become
// the "latest" that the next runner restores as ready content — and
// carries the request out saying why, in words the server does not read
// as "the content is in a backup".
func TestBackupWithoutContentTakesNone(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	r := backupRunner(c)
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	before := srv.backups()
	if len(before) != 1 {
		t.Fatalf("backups %v, want the stop's", before)
	}
	loseContent(t, r, env)
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.BackupGeneration++ })
	if got := srv.backups(); len(got) != len(before) {
		b := got[len(got)-1]
		t.Fatalf("a runner without the content reported backup %s (%d files, trigger %s)", b.GetId(), b.GetFiles(), b.GetTrigger())
	}
	if ms := manifests(t, srv.storage); len(ms) != len(before) {
		t.Errorf("manifests in storage %v, want only the %d reported", ms, len(before))
	}
	last := c.srv.last[env.Id]
	p := last.GetBackupProgress()
	if last.GetObservedBackupGeneration() != env.Spec.BackupGeneration || p.GetState().GetPhase() != subReady || p.GetState().GetMessage() != nothingHeldMessage {
		t.Errorf("observed generation %d (want %d), progress %v: want the request carried out with %q",
			last.GetObservedBackupGeneration(), env.Spec.BackupGeneration, p, nothingHeldMessage)
	}
}

// TestFailedCloneClonedAgain (REV-14 d): on the runner where the clone
// failed (state, no content), a start clones again; it never restores
// status.last_backup instead (the lost-disk fallback is for a runner with
// no state for the environment), so an empty environment is not marked
// ready.
func TestFailedCloneClonedAgain(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	r := backupRunner(c)
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := r.layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/old.txt"), "from the backup\n")
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	loseContent(t, r, env)
	env.Status = &covev1.EnvironmentStatus{LastBackup: srv.backups()[0]} // as the server keeps it
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if c.clones != 2 {
		t.Errorf("cloned %d times, want the failed clone tried again", c.clones)
	}
	if _, err := os.Lstat(filepath.Join(lay.Workspace(), "app/old.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the last backup was restored over the failed clone: %v", err)
	}
	if got := readFile(t, filepath.Join(lay.Workspace(), "app/README")); got != "hi\n" {
		t.Errorf("README %q, want the fresh clone", got)
	}
}

// TestLostDiskEmptyBackupNotRestored: a runner that lost the
// environment's directory does not restore a last backup that holds no
// files (one taken where there was no content): it clones afresh.
func TestLostDiskEmptyBackupNotRestored(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	lay := c.runner(0, false).layout(env.Id)
	if err := os.RemoveAll(lay.Dir); err != nil {
		t.Fatal(err)
	}
	empty := srv.backups()[0]
	empty.Files = 0
	env.Status = &covev1.EnvironmentStatus{LastBackup: empty}
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if c.clones != 2 {
		t.Errorf("cloned %d times, want a fresh clone rather than a restore of an empty backup", c.clones)
	}
	if _, ok := running(c.rt, env.Id); !ok {
		t.Error("not running")
	}
}

// TestLostDiskRestoreRetried: on a lost disk, a restore of the latest
// backup that fails is tried again at the next start — never replaced by
// a fresh clone, which would hide the work in the backup.
func TestLostDiskRestoreRetried(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "kept\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	if err := os.RemoveAll(lay.Dir); err != nil {
		t.Fatal(err)
	}
	good := srv.backups()[0]
	missing := &covev1.Backup{Id: env.Id + "/20260101T000000Z-0000000000000000", EnvironmentId: env.Id, Files: good.GetFiles()}
	env.Status = &covev1.EnvironmentStatus{LastBackup: missing}
	env.Spec.DesiredPhase = phaseRunning
	env.Spec.SpecVersion++
	_ = failRestore(t, c, env)
	if c.clones != 1 {
		t.Fatalf("cloned %d times after a failed lost-disk restore", c.clones)
	}
	// The server's latest is readable again (say, storage came back): the
	// next start restores it.
	env.Status = &covev1.EnvironmentStatus{LastBackup: good}
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {})
	if got := readFile(t, filepath.Join(lay.Workspace(), "app/work.txt")); got != "kept\n" {
		t.Errorf("work.txt %q after the lost-disk restore was tried again", got)
	}
	if c.clones != 1 {
		t.Errorf("cloned %d times, want the backup restored", c.clones)
	}
}
