package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestPlanBackupAndRestore: the stop's backup comes after the containers
// are gone and before anything is unmounted (the disk mounted for it if
// need be), never on delete; a restore stops, restores, then starts
// without cloning.
func TestPlanBackupAndRestore(t *testing.T) {
	running := observed{stateExists: true, contentReady: true, imageReady: true, rootfsMounted: true, someMounted: true,
		container: runtime.StatusRunning, agentReady: true, devcontainerDone: true, diskMounted: true, backup: true}
	got := plan(phaseStopped, running)
	want := []step{stepStop, stepDeleteContainer, stepBackup, stepUnmount, stepUnmountDisk}
	if !slices.Equal(got, want) {
		t.Errorf("stop: %v, want %v", got, want)
	}
	if got := plan(phaseDeleted, running); slices.Contains(got, stepBackup) {
		t.Errorf("delete backs up: %v", got)
	}
	stopped := observed{stateExists: true, contentReady: true, imageReady: true, container: runtime.StatusAbsent, diskDown: true, backup: true}
	got = plan(phaseStopped, stopped)
	want = []step{stepDisk, stepBackup, stepUnmountDisk}
	if !slices.Equal(got, want) {
		t.Errorf("backup of a stopped environment with its disk down: %v, want %v", got, want)
	}
	running.backup, running.restore = false, true
	got = plan(phaseRunning, running)
	want = append([]step{stepStop, stepDeleteContainer, stepUnmount, stepRestore, stepMount, stepStart, stepWaitAgent}, devcontainerSteps...)
	if !slices.Equal(got, want) {
		t.Errorf("restore of a running environment: %v, want %v", got, want)
	}
	got = plan(phaseRunning, observed{restore: true})
	want = append([]step{stepPrepare, stepRestore, stepImage, stepMount, stepStart, stepWaitAgent}, devcontainerSteps...)
	if !slices.Equal(got, want) {
		t.Errorf("restore on a runner without the environment: %v, want %v", got, want)
	}
}

// TestPeriodicBackup: a running environment is backed up every interval
// (the first interval from the first pass that finds it running), and an
// interval with nothing changed writes no backup.
func TestPeriodicBackup(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	r := backupRunner(c)
	clk := &jumpClock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	r.clock, r.bk.cfg.Interval = clk, 10*time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := testWorker(ctx, cancel, r, env)
	pass := func() {
		t.Helper()
		if _, err := r.reconcile(ctx, w, env); err != nil {
			t.Fatal(err)
		}
	}
	pass()
	if n := len(srv.backups()); n != 0 {
		t.Fatalf("%d backups at the first pass, want the interval to start", n)
	}
	if !w.backupDueLocked(clk.now.Add(10 * time.Minute)) {
		t.Error("no periodic pass due after the interval")
	}
	clk.now = clk.now.Add(10 * time.Minute)
	pass()
	b := srv.backups()
	if len(b) != 1 || b[0].GetTrigger() != "periodic" {
		t.Fatalf("backups %v, want one periodic", b)
	}
	clk.now = clk.now.Add(10 * time.Minute)
	pass()
	if n := len(srv.backups()); n != 1 {
		t.Errorf("%d backups after an interval with nothing changed, want 1", n)
	}
	if m := manifests(t, srv.storage); len(m) != 1 {
		t.Errorf("storage holds %v", m)
	}
	if msg := c.srv.last[env.Id].GetBackupProgress().GetState().GetMessage(); !strings.HasPrefix(msg, "skipped: nothing changed") {
		t.Errorf("progress %q", msg)
	}
}

// TestChildNeverShowsTheKey: whatever fails in the child, the key it
// was given is in none of its output.
func TestChildNeverShowsTheKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xA5}, 32)
	for name, storage := range map[string]string{
		"unknown kind": `{"kind":"ftp"}`,
		"bad storage":  `{"kind":"dir","dir":"/proc/self/no/such"}`,
		"bad backup":   `{"kind":"dir","dir":"` + t.TempDir() + `"}`,
	} {
		job, _ := json.Marshal(backupJob{Op: "restore", Storage: json.RawMessage(storage), Key: key, Name: "../../etc"})
		var out, logs bytes.Buffer
		in := strings.NewReader(string(job) + "\nwalk\n")
		if err := BackupChild(context.Background(), in, &out, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), `"error"`) {
			t.Errorf("%s: no error event in %q", name, out.String())
		}
		for _, enc := range []string{base64.StdEncoding.EncodeToString(key), hex.EncodeToString(key), string(key[:8])} {
			if strings.Contains(out.String()+logs.String(), enc) {
				t.Errorf("%s: the key is in the child's output: %q", name, out.String()+logs.String())
			}
		}
	}
}

// TestBackupChildrenBounded: with maxBackupChildren running, another
// backup waits for a slot (here until its context ends) without
// starting a child.
func TestBackupChildrenBounded(t *testing.T) {
	c := newCrashWorld(t)
	r := c.runner(0, false)
	started := 0
	r.bk.start = func(context.Context) (io.WriteCloser, io.ReadCloser, func() error, error) {
		started++
		return nil, nil, nil, errors.New("not reached")
	}
	for range maxBackupChildren {
		r.bk.slots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.runChild(ctx, &backupJob{Op: "backup"}, "", nil); !errors.Is(err, context.Canceled) || started != 0 {
		t.Fatalf("with every slot taken: %v, %d children started", err, started)
	}
	<-r.bk.slots
	if _, err := r.runChild(context.Background(), &backupJob{Op: "backup"}, "", nil); err == nil || started != 1 {
		t.Fatalf("with a slot free: %v, %d children started", err, started)
	}
	if len(r.bk.slots) != maxBackupChildren-1 {
		t.Errorf("%d slots taken after the run, want its slot back", len(r.bk.slots))
	}
}
