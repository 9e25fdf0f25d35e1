package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// restoreWorld: an environment that ran, with a file in each tree, and
// was stopped (one backup taken); then changed after it.
func restoreWorld(t *testing.T) (*crashWorld, *backupServer, *covev1.Environment, string) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "before\n")
	writeFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool"), "v1\n")
	writeFile(t, filepath.Join(lay.Volumes(), "data/db"), "rows v1\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	b := srv.backups()
	if len(b) != 1 {
		t.Fatalf("backups %v", b)
	}
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "after\n")
	writeFile(t, filepath.Join(lay.Workspace(), "app/later.txt"), "later\n")
	writeFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool"), "v2\n")
	return c, srv, env, b[0].GetId()
}

// TestRestoreRollsBack: `cove env restore` of the first backup while the
// environment runs: the current content is backed up first, then
// replaced; the environment runs again on the restored content, without
// cloning or running its create commands again.
func TestRestoreRollsBack(t *testing.T) {
	c, srv, env, first := restoreWorld(t)
	lay := c.runner(0, false).layout(env.Id)
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {
		s.Restore = &covev1.RestoreRequest{BackupId: first, Generation: 1, BackupFirst: true}
	})
	if got := readFile(t, filepath.Join(lay.Workspace(), "app/work.txt")); got != "before\n" {
		t.Errorf("work.txt %q after the restore", got)
	}
	if got := readFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool")); got != "v1\n" {
		t.Errorf("tool %q after the restore", got)
	}
	if got := readFile(t, filepath.Join(lay.Volumes(), "data/db")); got != "rows v1\n" {
		t.Errorf("volume %q after the restore", got)
	}
	if _, err := os.Lstat(filepath.Join(lay.Workspace(), "app/later.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("later.txt survived the restore: %v", err)
	}
	b := srv.backups()
	if len(b) != 2 || b[1].GetTrigger() != "before-restore" {
		t.Fatalf("backups %v, want the stop's and the before-restore one", b)
	}
	if _, ok := running(c.rt, env.Id); !ok {
		t.Error("not running after the restore")
	}
	if c.clones != 1 {
		t.Errorf("cloned %d times", c.clones)
	}
	last := c.srv.last[env.Id]
	if last.GetObservedRestoreGeneration() != 1 || last.GetBackupProgress().GetOperation() != "restore" || last.GetBackupProgress().GetState().GetPhase() != subReady {
		t.Errorf("status after the restore: generation %d, progress %v", last.GetObservedRestoreGeneration(), last.GetBackupProgress())
	}
	noLeftovers(t, lay.Dir)
	// Undo: the before-restore backup brings "after" back.
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {
		s.Restore = &covev1.RestoreRequest{BackupId: b[1].GetId(), Generation: 2}
	})
	if got := readFile(t, filepath.Join(lay.Workspace(), "app/later.txt")); got != "later\n" {
		t.Errorf("later.txt %q after undoing the restore", got)
	}
}

// noLeftovers: no restore record, no content left aside.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && (strings.HasSuffix(p, asideSuffix) || filepath.Base(p) == "restore.json") {
			t.Errorf("left behind: %s", p)
		}
		if err == nil && fi.IsDir() && strings.HasSuffix(p, asideSuffix) {
			return filepath.SkipDir
		}
		return nil
	})
}

// failRestore reconciles env (asking for a restore that fails) until the
// runner records the failure, and returns it.
func failRestore(t *testing.T, c *crashWorld, env *covev1.Environment) string {
	t.Helper()
	r := backupRunner(c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := testWorker(ctx, cancel, r, env)
	for pass := 0; pass < 5; pass++ {
		_, _ = r.reconcile(ctx, w, env)
		st, err := loadState(r.layout(env.Id).State())
		if err != nil {
			t.Fatal(err)
		}
		if st.Failure.SpecVersion == env.Spec.SpecVersion {
			return st.Failure.Message
		}
	}
	t.Fatalf("the failed restore was not recorded; machine: %v", c.srv.last[env.Id].GetMachine())
	return ""
}

// TestRestoreFailureKeepsContent: a restore that cannot be done (a
// backup that does not exist) leaves the content as it was, never starts
// the environment on anything half restored, and does not keep it from
// running (REV-16): the request is carried out as FAILED, the environment
// starts on its own content, and later starts do not try it again.
func TestRestoreFailureKeepsContent(t *testing.T) {
	c, _, env, _ := restoreWorld(t)
	lay := c.runner(0, false).layout(env.Id)
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {
		s.Restore = &covev1.RestoreRequest{BackupId: env.Id + "/20260101T000000Z-0000000000000000", Generation: 1, BackupFirst: true}
	})
	keptAfterFailedRestore(t, c, env, "app/work.txt", "after\n")
	if got := readFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool")); got != "v2\n" {
		t.Errorf("tool %q after a failed restore", got)
	}
	// Stop and start again: the environment runs, the restore is not
	// tried again.
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if _, ok := running(c.rt, env.Id); !ok {
		t.Error("not running after a later start")
	}
	if p := c.srv.last[env.Id].GetBackupProgress(); p.GetOperation() == "restore" && p.GetState().GetPhase() == subInProgress {
		t.Errorf("the failed restore was tried again: %v", p)
	}
}

// keptAfterFailedRestore asserts what a restore that failed with content
// to go back to leaves: that content (file rel holds want), running, the
// generation carried out as FAILED with a message saying so and how to
// try again, nothing left aside.
func keptAfterFailedRestore(t *testing.T, c *crashWorld, env *covev1.Environment, rel, want string) string {
	t.Helper()
	lay := c.runner(0, false).layout(env.Id)
	if got := readFile(t, filepath.Join(lay.Workspace(), rel)); got != want {
		t.Errorf("%s %q after a failed restore, want the content kept (%q)", rel, got, want)
	}
	if _, ok := running(c.rt, env.Id); !ok {
		t.Error("not running on the kept content after a failed restore")
	}
	last := c.srv.last[env.Id]
	p := last.GetBackupProgress()
	msg := p.GetState().GetMessage()
	if p.GetOperation() != "restore" || p.GetState().GetPhase() != subFailed || last.GetObservedRestoreGeneration() != env.Spec.Restore.GetGeneration() {
		t.Errorf("progress %v, observed restore generation %d: want the restore carried out as FAILED", p, last.GetObservedRestoreGeneration())
	}
	if !strings.Contains(msg, "restore of backup") || !strings.Contains(msg, "unchanged") || !strings.Contains(msg, "cove env restore --backup") {
		t.Errorf("message %q: want what failed, that the content is unchanged, and how to try again", msg)
	}
	noLeftovers(t, lay.Dir)
	return msg
}

// TestRestoreFailureWithoutContent: a moved environment (no content on
// this runner) whose restore fails stays failed: nothing to start, and
// no empty environment marked ready; the next start tries again.
func TestRestoreFailureWithoutContent(t *testing.T) {
	c, _ := newBackupWorld(t)
	env := c.env()
	env.Spec.DesiredPhase = phaseRunning
	env.Spec.Restore = &covev1.RestoreRequest{BackupId: env.Id + "/20260101T000000Z-0000000000000000", Generation: 1}
	env.Spec.SpecVersion++
	msg := failRestore(t, c, env)
	if !strings.Contains(msg, "restore of backup") {
		t.Errorf("failure %q: want what failed", msg)
	}
	st, err := loadState(c.runner(0, false).layout(env.Id).State())
	if err != nil {
		t.Fatal(err)
	}
	if st.Content.Ready || st.Backup.RestoreGeneration != 0 {
		t.Errorf("content ready %v, restore generation %d after a failed restore with nothing to keep", st.Content.Ready, st.Backup.RestoreGeneration)
	}
	if _, ok := running(c.rt, env.Id); ok {
		t.Error("running with no content")
	}
	if c.clones != 0 {
		t.Errorf("cloned %d times: a moved environment is restored, never cloned afresh", c.clones)
	}
}

// TestRestoreDiskFull: the restore runs out of space (a small tmpfs
// holds the environment's data): a clear error, the old content intact.
func TestRestoreDiskFull(t *testing.T) {
	c, srv := newBackupWorld(t)
	if err := syscall.Mount("tmpfs", c.dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(c.dir, syscall.MNT_DETACH) })
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	big := make([]byte, 6<<20)
	_, _ = rand.Read(big)
	writeFile(t, filepath.Join(lay.Workspace(), "app/big.bin"), string(big))
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	b := srv.backups()
	if len(b) != 1 {
		t.Fatalf("backups %v", b)
	}
	if err := os.Remove(filepath.Join(lay.Workspace(), "app/big.bin")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "mine\n")
	// Leave less room than the big file needs.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(c.dir, &fs); err != nil {
		t.Fatal(err)
	}
	fill := int64(fs.Bavail)*fs.Bsize - 2<<20
	f, err := os.Create(filepath.Join(c.dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, fill)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	env.Spec.DesiredPhase = phaseRunning
	env.Spec.Restore = &covev1.RestoreRequest{BackupId: b[0].GetId(), Generation: 1}
	env.Spec.SpecVersion++
	if err := c.reconcileUntil(backupRunner(c), env); err != nil {
		t.Fatal(err)
	}
	msg := keptAfterFailedRestore(t, c, env, "app/work.txt", "mine\n")
	if !strings.Contains(msg, "disk full") || strings.Contains(msg, "retrying") {
		t.Errorf("failure %q: want it to say the disk is full", msg)
	}
	if _, err := os.Lstat(filepath.Join(lay.Workspace(), "app/big.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a partial big.bin is left: %v", err)
	}
}

// TestRestoreKilled kills the runner in each step of a restore (after
// the step's effects, with the state recording them or not): the
// restarted runner converges to the restored content, and never starts
// the environment on content that is neither the old nor the restored.
func TestRestoreKilled(t *testing.T) {
	steps := 0
	{
		c, _, env, first := restoreWorld(t)
		r := backupRunner(c)
		for name, sp := range r.steps {
			r.steps[name] = crashingStep{sp: sp, crash: func() bool { steps++; return false }}
		}
		c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.Restore = &covev1.RestoreRequest{BackupId: first, Generation: 1} })
	}
	for k := 1; k <= steps; k++ {
		for _, mid := range []bool{false, true} {
			t.Run(fmt.Sprintf("step%d/mid=%v", k, mid), func(t *testing.T) {
				c, _, env, first := restoreWorld(t)
				lay := c.runner(0, false).layout(env.Id)
				env.Spec.Restore = &covev1.RestoreRequest{BackupId: first, Generation: 1}
				env.Spec.SpecVersion++
				r := c.runner(k, mid)
				r.bk.start = inProcessChild(nil)
				if err := c.reconcileUntil(r, env); !errors.Is(err, errCrash) {
					t.Fatalf("not killed in step %d: %v", k, err)
				}
				if _, ok := running(c.rt, env.Id); ok {
					// Started after the restore step: it must be the
					// restored content.
					if got := readFile(t, filepath.Join(lay.Workspace(), "app/work.txt")); got != "before\n" {
						t.Fatalf("running on work.txt %q", got)
					}
				}
				if err := c.reconcileUntil(backupRunner(c), env); err != nil {
					t.Fatalf("after the restart: %v", err)
				}
				if got := readFile(t, filepath.Join(lay.Workspace(), "app/work.txt")); got != "before\n" {
					t.Errorf("work.txt %q, want the restored content", got)
				}
				if _, ok := running(c.rt, env.Id); !ok {
					t.Error("not running")
				}
				noLeftovers(t, lay.Dir)
			})
		}
	}
}

// TestRestoreRecovery: a runner killed between moving the content aside
// and the end of the restore: the partial restore goes and the content
// comes back; killed after the restore succeeded: the old content goes.
func TestRestoreRecovery(t *testing.T) {
	e, _ := testStepEnv(t, &envState{})
	e.lay = e.lay.WithDisk() // any data directory will do
	e.st.IDMap.HostID, e.st.IDMap.Size = uint32(os.Getuid()), 1
	ws := e.lay.Workspace()
	writeFile(t, filepath.Join(ws, "app/mine.txt"), "mine\n")
	kept := filepath.Join(e.lay.ServicesData(), "cache", "upper", "keep.txt") // a service's tree before the restore
	writeFile(t, kept, "cache\n")
	req := &covev1.RestoreRequest{BackupId: "b", Generation: 3}
	if _, err := asideContent(e.lay, e.st, req); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ws, "app/mine.txt"), "half restor") // the child, killed
	// ... having made a service's tree (restoreAll) and half written a file
	// there under its name.
	svc := filepath.Join(e.lay.ServicesData(), "db", "upper")
	writeFile(t, filepath.Join(svc, "var/lib/db/data"), "half writ")
	if finished, err := recoverRestore(e.lay, 3); err != nil || finished {
		t.Fatalf("recover: finished %v, %v", finished, err)
	}
	if _, err := os.Lstat(svc); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the service tree the killed restore made is left: %v", err)
	}
	if got := readFile(t, kept); got != "cache\n" {
		t.Errorf("a service's own tree: keep.txt %q after recovering", got)
	}
	if got := readFile(t, filepath.Join(ws, "app/mine.txt")); got != "mine\n" {
		t.Fatalf("mine.txt %q after recovering from a killed restore", got)
	}
	noLeftovers(t, e.lay.Dir)
	if _, err := os.Lstat(e.lay.Upper()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an upper directory the environment never had is left: %v", err)
	}

	rec, err := asideContent(e.lay, e.st, req)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ws, "app/mine.txt"), "restored\n")
	rec.Done = true
	if err := writeRestoreRecord(e.lay, rec); err != nil {
		t.Fatal(err)
	}
	if finished, err := recoverRestore(e.lay, 3); err != nil || !finished {
		t.Fatalf("recover after success: finished %v, %v", finished, err)
	}
	if got := readFile(t, filepath.Join(ws, "app/mine.txt")); got != "restored\n" {
		t.Fatalf("mine.txt %q, want the restored content kept", got)
	}
	noLeftovers(t, e.lay.Dir)
}

// TestRestoreOnAnotherRunner: an environment moved to a runner that has
// none of it (spec.restore set by the server): prepared, restored, then
// started, without cloning; the files match the backup.
func TestRestoreOnAnotherRunner(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "moved\n")
	writeFile(t, filepath.Join(lay.Upper(), "root/.bashrc"), "alias ll='ls -l'\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	b := srv.backups()
	if len(b) != 1 {
		t.Fatalf("backups %v", b)
	}

	other := &crashWorld{t: t, dir: t.TempDir(), rt: c.rt, images: newFakeImages(filepath.Join(t.TempDir(), "layers")), srv: c.srv, api: c.api}
	// The old runner's container is gone with it.
	if s, _ := c.rt.State(context.Background(), env.Id); s.Status != runtime.StatusAbsent {
		t.Fatalf("container %s", s.Status)
	}
	other.converge(backupRunner(other), env, func(s *covev1.EnvironmentSpec) {
		s.DesiredPhase = phaseRunning
		s.Restore = &covev1.RestoreRequest{BackupId: b[0].GetId(), Generation: 1}
	})
	olay := other.runner(0, false).layout(env.Id)
	if got := readFile(t, filepath.Join(olay.Workspace(), "app/work.txt")); got != "moved\n" {
		t.Errorf("work.txt %q on the new runner", got)
	}
	if got := readFile(t, filepath.Join(olay.Upper(), "root/.bashrc")); got != "alias ll='ls -l'\n" {
		t.Errorf(".bashrc %q on the new runner", got)
	}
	if other.clones != 0 {
		t.Errorf("the new runner cloned %d times: the restored content is the environment's", other.clones)
	}
	st, err := loadState(olay.State())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Content.Ready || st.Content.RepoName != "app" || !st.Lifecycle.CreatedDone || st.Backup.RestoreGeneration != 1 {
		t.Errorf("state after the move: content %+v, created %v, restore generation %d", st.Content, st.Lifecycle.CreatedDone, st.Backup.RestoreGeneration)
	}
	if _, ok := running(other.rt, env.Id); !ok {
		t.Error("not running on the new runner")
	}
}

// TestStartAfterLostDisk: the runner lost the environment's directory
// (a disk replaced); `cove env start` brings the latest backup back
// rather than a fresh clone.
func TestStartAfterLostDisk(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "kept\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	if err := os.RemoveAll(lay.Dir); err != nil {
		t.Fatal(err)
	}
	env.Status = &covev1.EnvironmentStatus{LastBackup: srv.backups()[0]} // as the server keeps it
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if got := readFile(t, filepath.Join(lay.Workspace(), "app/work.txt")); got != "kept\n" {
		t.Errorf("work.txt %q after a start on a lost disk", got)
	}
	if c.clones != 1 {
		t.Errorf("cloned %d times, want the backup restored instead of a second clone", c.clones)
	}
	if _, ok := running(c.rt, env.Id); !ok {
		t.Error("not running")
	}
}

// TestRestoreBackupFirstFails (REV-16): the backup before a rollback
// fails (storage unreachable): the restore is not done — the content
// would have no copy to roll back to — and is carried out as failed; the
// environment runs on its unchanged content instead of failing every
// start.
func TestRestoreBackupFirstFails(t *testing.T) {
	c, srv, env, first := restoreWorld(t)
	n := len(srv.backups())
	srv.mu.Lock()
	srv.accessFails = 1
	srv.mu.Unlock()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {
		s.Restore = &covev1.RestoreRequest{BackupId: first, Generation: 1, BackupFirst: true}
	})
	msg := keptAfterFailedRestore(t, c, env, "app/work.txt", "after\n")
	if !strings.Contains(msg, "the backup before it failed") {
		t.Errorf("message %q: want it to say the backup before the restore failed", msg)
	}
	if got := len(srv.backups()); got != n {
		t.Errorf("%d backups recorded, want %d", got, n)
	}
}
