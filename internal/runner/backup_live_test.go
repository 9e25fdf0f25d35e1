package runner

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/resources"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// fakeFreezer records freezes and thaws; onThaw, if set, is closed at
// the first thaw.
type fakeFreezer struct {
	mu     sync.Mutex
	calls  []string
	frozen map[string]bool
	onThaw chan struct{}
}

func (f *fakeFreezer) Freeze(_ context.Context, p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "freeze "+p)
	f.frozen[p] = true
	return nil
}

func (f *fakeFreezer) Thaw(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "thaw "+p)
	f.frozen[p] = false
	if f.onThaw != nil {
		close(f.onThaw)
		f.onThaw = nil
	}
	return nil
}

func (f *fakeFreezer) Thawed(p string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.frozen[p], nil
}

// elapsedClock is the real clock whose timers have all already fired.
type elapsedClock struct{ realClock }

func (elapsedClock) After(time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}

// liveBackup converges env to running, then asks a manual backup of it
// while it runs with runner r (made by mk).
func liveBackup(t *testing.T, c *crashWorld, env *covev1.Environment, r *Runner) {
	t.Helper()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	writeFile(t, filepath.Join(r.layout(env.Id).Workspace(), "app/edit.txt"), "edited\n")
	env.Spec.BackupGeneration++
	env.Spec.SpecVersion++
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := r.reconcile(ctx, testWorker(ctx, cancel, r, env), env); err != nil {
		t.Fatal(err)
	}
}

// TestManualBackupFreezes: `cove env backup` of a running environment
// freezes its cgroup for the walk and thaws it after, reports the
// backup (frozen_ms) and the generation carried out.
func TestManualBackupFreezes(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	r := backupRunner(c)
	r.cfg.CgroupParent = "cove-test"
	fz := &fakeFreezer{frozen: map[string]bool{}}
	r.bk.freezer = fz
	liveBackup(t, c, env, r)
	cg := resources.CgroupPath("cove-test", env.Id)
	if strings.Join(fz.calls, ",") != "freeze "+cg+",thaw "+cg {
		t.Fatalf("freezer calls %v, want one freeze and one thaw of %s", fz.calls, cg)
	}
	b := srv.backups()
	if len(b) != 1 || b[0].GetTrigger() != "manual" {
		t.Fatalf("backups %v, want one manual", b)
	}
	last := c.srv.last[env.Id]
	if last.GetObservedBackupGeneration() != env.Spec.BackupGeneration || last.GetLastBackup().GetId() != b[0].GetId() || last.GetPhase() != phaseRunning {
		t.Errorf("status: phase %s, observed %d, last %v", last.GetPhase(), last.GetObservedBackupGeneration(), last.GetLastBackup())
	}
	if msg := last.GetBackupProgress().GetState().GetMessage(); msg != "" {
		t.Errorf("a consistent backup says %q", msg)
	}
}

// TestFreezeBounded: a walk that outlasts --backup-freeze-max: the
// environment is thawed at the bound (before the walk even starts here),
// the backup finishes and says its view may not be consistent.
func TestFreezeBounded(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	r := backupRunner(c)
	r.cfg.CgroupParent = "cove-test"
	thawed := make(chan struct{})
	fz := &fakeFreezer{frozen: map[string]bool{}, onThaw: thawed}
	r.bk.freezer = fz
	r.bk.start = inProcessChild(thawed) // the walk waits for the thaw
	r.clock = elapsedClock{}            // the bound has passed at once
	liveBackup(t, c, env, r)
	if len(srv.backups()) != 1 {
		t.Fatalf("backups %v", srv.backups())
	}
	if fz.frozen[resources.CgroupPath("cove-test", env.Id)] {
		t.Error("left frozen")
	}
	if msg := c.srv.last[env.Id].GetBackupProgress().GetState().GetMessage(); !strings.Contains(msg, "could not stay frozen") {
		t.Errorf("progress message %q: want it to say the view may not be consistent", msg)
	}
}

// TestBackupKilled: a backup whose child dies mid-way (the runner killed
// or the storage gone): nothing is listed in storage nor reported, the
// environment is thawed and keeps running.
func TestBackupKilled(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	r := backupRunner(c)
	r.cfg.CgroupParent = "cove-test"
	fz := &fakeFreezer{frozen: map[string]bool{}}
	r.bk.freezer = fz
	start := r.bk.start
	r.bk.start = func(ctx context.Context) (io.WriteCloser, io.ReadCloser, func() error, error) {
		// The child is killed as the walk starts.
		ctx, cancel := context.WithCancel(ctx)
		in, out, w, err := start(ctx)
		return killAtWalk{in, cancel}, out, w, err
	}
	liveBackup(t, c, env, r)
	if b := srv.backups(); len(b) != 0 {
		t.Fatalf("reported %v", b)
	}
	if m := manifests(t, srv.storage); len(m) != 0 {
		t.Fatalf("storage lists %v", m)
	}
	if fz.frozen[resources.CgroupPath("cove-test", env.Id)] {
		t.Error("left frozen")
	}
	if _, ok := running(c.rt, env.Id); !ok {
		t.Error("the environment stopped running")
	}
	if p := c.srv.last[env.Id].GetBackupProgress(); p.GetState().GetPhase() != subFailed {
		t.Errorf("progress %v, want FAILED", p)
	}
}

// killAtWalk cancels the child's context before the walk's go reaches it.
type killAtWalk struct {
	io.WriteCloser
	cancel context.CancelFunc
}

func (k killAtWalk) Write(p []byte) (int, error) {
	if string(p) == "walk\n" {
		k.cancel()
	}
	return k.WriteCloser.Write(p)
}

// TestThawAtStart: a runner killed while an environment was frozen for
// a backup: the next runner thaws it before anything else (on a fake v1
// freezer hierarchy, and on v2).
func TestThawAtStart(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			c := newCrashWorld(t)
			r := c.runner(0, false)
			r.cfg.CgroupParent = "cove-test"
			root := t.TempDir()
			file, frozen, thawed := "freezer.state", "FROZEN", "THAWED"
			r.bk.freezer = resources.Freezer{V1: root}
			if v == "v2" {
				file, frozen, thawed = "cgroup.freeze", "1", "0"
				r.bk.freezer = resources.Freezer{V2: root}
			}
			for id, state := range map[string]string{"frozen1": frozen, "fine": thawed} {
				if err := os.MkdirAll(filepath.Join(c.dir, "envs", id), 0o711); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(root, "cove-test", id, file), state)
			}
			r.thawAll()
			for _, id := range []string{"frozen1", "fine"} {
				if got := strings.TrimSpace(readFile(t, filepath.Join(root, "cove-test", id, file))); got != thawed {
					t.Errorf("%s: %s is %q after the start, want %q", id, file, got, thawed)
				}
			}
		})
	}
}
