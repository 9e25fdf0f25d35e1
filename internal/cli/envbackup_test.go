package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/server/servertest"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// backupCLIWorld is a server with backup storage, the CLI logged in as its
// owner (alice), her environment "work" RUNNING on runner r1, and a second
// runner r2.
type backupCLIWorld struct {
	s      *servertest.Server
	r1, r2 *servertest.Runner
	env    *covev1.Environment
	blobs  blob.Store // the server's backup storage
}

var cliBackupCaps = &covev1.RunnerCapabilities{Runtimes: []string{"container"}, Cpus: 4, MemoryBytes: 8 << 30,
	Classes: []*covev1.EnvironmentClass{{Id: "default", Cpus: 1, MemoryBytes: 1 << 30}}}

func newBackupCLIWorld(t *testing.T) *backupCLIWorld {
	t.Helper()
	storage := &covev1.BackupStorage{Kind: "dir", Dir: t.TempDir()}
	bs, err := server.OpenBackupStorage(testutil.Context(t), storage, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, servertest.Options{AdminName: "alice", Configure: func(c *server.Config) {
		c.BackupStorage, c.BackupStore = storage, bs
		c.DefaultInactivity = -1
	}})
	t.Setenv("COVE_CONFIG_DIR", t.TempDir())
	t.Setenv("COVE_SERVER", s.URL)
	t.Setenv("COVE_TOKEN", s.Admin.Token)
	w := &backupCLIWorld{s: s, r1: s.JoinRunner(t, "r1"), blobs: bs}
	w.heartbeat(t, w.r1)
	ctx := testutil.Context(t)
	resp, err := s.Admin.Environments.CreateEnvironment(ctx, connect.NewRequest(&covev1.CreateEnvironmentRequest{Name: "work",
		Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "https://example.com/repo.git"}}}))
	if err != nil {
		t.Fatal(err)
	}
	w.env = resp.Msg.Environment
	if w.env.GetMetadata().GetRunnerId() != w.r1.ID {
		t.Fatalf("not on r1: %s", w.env.GetStatus().GetFailureMessage())
	}
	w.r2 = s.JoinRunner(t, "r2")
	w.heartbeat(t, w.r2)
	w.status(t, nil)
	return w
}

func (w *backupCLIWorld) heartbeat(t *testing.T, r *servertest.Runner) {
	t.Helper()
	if _, err := r.Client.Heartbeat(testutil.Context(t), connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: cliBackupCaps})); err != nil {
		t.Fatal(err)
	}
}

func (w *backupCLIWorld) get(t *testing.T) *covev1.Environment {
	t.Helper()
	resp, err := w.s.Admin.Environments.GetEnvironment(testutil.Context(t), connect.NewRequest(&covev1.GetEnvironmentRequest{Id: w.env.Id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.Environment
}

// status has r1 report "work" RUNNING, having carried out its spec.
func (w *backupCLIWorld) status(t *testing.T, edit func(*covev1.EnvironmentStatus)) {
	t.Helper()
	w.statusFrom(t, w.r1, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, edit)
}

// statusFrom has runner r report "work" in phase, having carried out its
// spec.
func (w *backupCLIWorld) statusFrom(t *testing.T, r *servertest.Runner, phase covev1.EnvironmentPhase, edit func(*covev1.EnvironmentStatus)) {
	t.Helper()
	e := w.get(t)
	st := &covev1.EnvironmentStatus{Phase: phase, ObservedSpecVersion: e.GetSpec().GetSpecVersion(),
		ObservedBackupGeneration: e.GetSpec().GetBackupGeneration(), ObservedRestoreGeneration: e.GetSpec().GetRestore().GetGeneration()}
	if edit != nil {
		edit(st)
	}
	if _, err := r.Client.ReportStatus(testutil.Context(t), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: w.env.Id, Status: st})); err != nil {
		t.Fatal(err)
	}
}

func (w *backupCLIWorld) report(t *testing.T, n int, trigger string, files int64) *covev1.Backup {
	t.Helper()
	b := &covev1.Backup{Id: fmt.Sprintf("%s/b%d", w.env.Id, n), EnvironmentId: w.env.Id, Time: timestamppb.New(time.Now().Add(-12 * time.Minute)),
		Trigger: trigger, Files: files, Bytes: 5 << 20, BytesNew: 3 << 20, BytesReused: 2 << 20, StoredBytes: 1 << 20, DurationMs: 1500}
	// The server records only backups whose manifest is in storage.
	if err := w.blobs.Put(testutil.Context(t), "manifests/"+b.Id, strings.NewReader("manifest"), int64(len("manifest"))); err != nil {
		t.Fatal(err)
	}
	if _, err := w.r1.Client.ReportBackup(testutil.Context(t), connect.NewRequest(&covev1.ReportBackupRequest{Backup: b})); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEnvBackupsListAndGet: `cove env backups` says there are none, then
// lists them newest first as a table or JSON; `cove env get` shows the
// last backup and one in progress or failed.
func TestEnvBackupsListAndGet(t *testing.T) {
	w := newBackupCLIWorld(t)
	if out, errOut, err := runCLI(EnvCommand(), "backups", "work"); err != nil || out != "" || !strings.Contains(errOut, "No backups of work yet") {
		t.Fatalf("no backups: %v %q %q", err, out, errOut)
	}
	first := w.report(t, 1, "periodic", 12)
	second := w.report(t, 2, "stop", 1234)
	out, _, err := runCLI(EnvCommand(), "backups", "work")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "DURATION") ||
		!strings.HasPrefix(lines[1], second.Id) || !strings.HasPrefix(lines[2], first.Id) {
		t.Fatalf("table, newest first:\n%s", out)
	}
	for _, want := range []string{"stop", "1,234", "5 MiB", "3 MiB", "2 MiB", "1 MiB", "1.5s", "12 min ago"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	out, _, err = runCLI(EnvCommand(), "backups", "work", "-o", "json")
	var parsed struct {
		Backups []struct{ ID, Trigger string }
	}
	if err != nil || json.Unmarshal([]byte(out), &parsed) != nil || len(parsed.Backups) != 2 || parsed.Backups[0].ID != second.Id {
		t.Fatalf("json (%v):\n%s", err, out)
	}

	w.status(t, func(st *covev1.EnvironmentStatus) {
		st.BackupProgress = &covev1.BackupProgress{Operation: "backup", FilesDone: 2048, BytesDone: 7 << 20, StartedAt: timestamppb.Now(),
			State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_IN_PROGRESS}}
	})
	out, _, err = runCLI(EnvCommand(), "get", "work")
	if err != nil || !strings.Contains(out, "Last backup: 12 min ago (stop), 1,234 files, 3 MiB new") ||
		!strings.Contains(out, "Backup:      backup in progress: 2,048 files, 7 MiB") {
		t.Fatalf("get (%v):\n%s", err, out)
	}
	w.status(t, func(st *covev1.EnvironmentStatus) {
		st.BackupProgress = &covev1.BackupProgress{Operation: "restore", StartedAt: timestamppb.Now(),
			State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "chunk 3f… missing: /workspaces/a.txt\x1b[2J"}}
	})
	out, _, _ = runCLI(EnvCommand(), "get", "work")
	if !strings.Contains(out, "Restore:     restore failed: chunk 3f… missing: /workspaces/a.txt") || strings.Contains(out, "\x1b") {
		t.Fatalf("get with a failed restore:\n%q", out)
	}
}

// TestEnvBackupWait: `cove env backup --wait` returns once the runner has
// carried out the request, printing the new backup; a failed backup fails
// the command with the runner's message; with nothing new, it says so.
func TestEnvBackupWait(t *testing.T) {
	w := newBackupCLIWorld(t)
	type result struct {
		out, errOut string
		err         error
	}
	run := func() <-chan result {
		ch := make(chan result, 1)
		go func() {
			out, errOut, err := runCLI(EnvCommand(), "backup", "work", "--wait", "--timeout", "5m")
			ch <- result{out, errOut, err}
		}()
		return ch
	}
	done := run()
	testutil.WaitFor(t, "the backup generation to be bumped", func() bool { return w.get(t).GetSpec().GetBackupGeneration() == 1 })
	w.report(t, 1, "manual", 7)
	w.status(t, nil) // observes generation 1
	r := testutil.Receive(t, done, "cove env backup --wait")
	if r.err != nil || !strings.Contains(r.out, "Backed up work: 12 min ago (manual), 7 files, 3 MiB new") {
		t.Fatalf("backup --wait: %v\n%s%s", r.err, r.out, r.errOut)
	}

	done = run()
	testutil.WaitFor(t, "the backup generation to be bumped", func() bool { return w.get(t).GetSpec().GetBackupGeneration() == 2 })
	w.status(t, func(st *covev1.EnvironmentStatus) {
		st.ObservedBackupGeneration = 1
		st.BackupProgress = &covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.Now(),
			State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "storage unavailable: connection refused"}}
	})
	r = testutil.Receive(t, done, "cove env backup --wait")
	if r.err == nil || !strings.Contains(r.err.Error(), "the backup of work failed: storage unavailable") {
		t.Fatalf("failed backup: %v\n%s", r.err, r.out)
	}

	// The runner had nothing new to back up: it says so rather than passing
	// the previous backup off as a new one.
	done = run()
	testutil.WaitFor(t, "the backup generation to be bumped", func() bool { return w.get(t).GetSpec().GetBackupGeneration() == 3 })
	w.status(t, nil)
	r = testutil.Receive(t, done, "cove env backup --wait")
	if r.err != nil || !strings.Contains(r.out, "Nothing changed in work since its last backup: 12 min ago (manual)") {
		t.Fatalf("nothing new: %v\n%s", r.err, r.out)
	}
}

// TestEnvRestoreWaitFailed: `cove env restore --wait` fails with the
// runner's message when the runner carried the restore out as failed (its
// generation observed, the environment started on its unchanged content).
func TestEnvRestoreWaitFailed(t *testing.T) {
	w := newBackupCLIWorld(t)
	first := w.report(t, 1, "periodic", 3)
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLI(EnvCommand(), "restore", "work", "--backup", first.Id, "--wait", "--timeout", "5m")
		done <- err
	}()
	testutil.WaitFor(t, "spec.restore to be set", func() bool { return w.get(t).GetSpec().GetRestore().GetGeneration() == 1 })
	w.status(t, func(st *covev1.EnvironmentStatus) { // observes generation 1
		st.BackupProgress = &covev1.BackupProgress{Operation: "restore", StartedAt: timestamppb.Now(),
			State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "restore of backup b1 failed, the environment's content is unchanged: chunk missing"}}
	})
	err := testutil.Receive(t, done, "cove env restore --wait")
	if err == nil || !strings.Contains(err.Error(), "the restore of work failed") || !strings.Contains(err.Error(), "unchanged") {
		t.Fatalf("restore --wait of a restore carried out as failed: %v", err)
	}
}

// TestEnvRestoreAndMove: `cove env restore` names the backup it restores
// (the latest by default) and refuses one that is not the environment's;
// `cove env start --runner` says what the move does; a mistyped
// subcommand gets a suggestion.
func TestEnvRestoreAndMove(t *testing.T) {
	w := newBackupCLIWorld(t)
	if _, _, err := runCLI(EnvCommand(), "restore", "work"); err == nil || !strings.Contains(err.Error(), "has no backup yet") {
		t.Fatalf("restore without backups: %v", err)
	}
	first := w.report(t, 1, "periodic", 3)
	w.report(t, 2, "periodic", 4)
	_, errOut, err := runCLI(EnvCommand(), "restore", "work", "--backup", first.Id)
	if err != nil || !strings.Contains(errOut, "Restoring work from backup "+first.Id) {
		t.Fatalf("restore: %v %s", err, errOut)
	}
	if r := w.get(t).GetSpec().GetRestore(); r.GetBackupId() != first.Id || !r.GetBackupFirst() {
		t.Fatalf("spec.restore = %v", r)
	}
	if _, _, err := runCLI(EnvCommand(), "restore", "work", "--backup", "someone-else/b1"); err == nil || !strings.Contains(err.Error(), `has no backup "someone-else/b1"`) {
		t.Fatalf("restore of a foreign backup: %v", err)
	}

	w.status(t, nil)
	_, errOut, err = runCLI(EnvCommand(), "start", "work", "--runner", "r2")
	if err != nil || !strings.Contains(errOut, "Moving work to runner r2: it is stopped and backed up") {
		t.Fatalf("start --runner: %v %s", err, errOut)
	}
	if _, _, err := runCLI(EnvCommand(), "start", "work", "--runner", "nowhere"); err == nil || !strings.Contains(err.Error(), `runner "nowhere" not found`) {
		t.Fatalf("start --runner nowhere: %v", err)
	}

	cmd := EnvCommand()
	RejectUnknownSubcommands(cmd)
	if _, _, err := runCLI(cmd, "backpus", "work"); err == nil || !strings.Contains(err.Error(), "backups") {
		t.Fatalf("mistyped subcommand: %v", err)
	}
}

// TestPrintBackupsIsTerminalSafe: ids and triggers come from runners; no
// escape sequence reaches the terminal.
func TestPrintBackupsIsTerminalSafe(t *testing.T) {
	var out strings.Builder
	now := time.Now()
	err := printBackups(&out, []*covev1.Backup{{Id: "e/\x1b]0;owned\x07b", Trigger: "stop\x1b[2J", Time: timestamppb.New(now)}}, now)
	if err != nil || strings.ContainsAny(out.String(), "\x1b\x07") {
		t.Fatalf("%v %q", err, out.String())
	}
	if got := thousands(1234567); got != "1,234,567" {
		t.Errorf("thousands = %q", got)
	}
}

// TestPrintBackupsNotes: the server's note on a salvage is printed after
// the table, naming the backup, terminal-safe; backups without one get
// no line.
func TestPrintBackupsNotes(t *testing.T) {
	var out strings.Builder
	now := time.Now()
	note := `copy left on runner "r1" when the environment moved; newer than the backup it was moved from`
	err := printBackups(&out, []*covev1.Backup{
		{Id: "e/s1", Trigger: "salvage", Time: timestamppb.New(now), Note: note + "\x1b[2J"},
		{Id: "e/b1", Trigger: "stop", Time: timestamppb.New(now)},
	}, now)
	if err != nil || !strings.Contains(out.String(), "e/s1: "+note) || strings.Contains(out.String(), "e/b1: ") || strings.ContainsAny(out.String(), "\x1b") {
		t.Fatalf("%v %q", err, out.String())
	}
}

// TestEnvStartRunnerWait: `cove env start NAME --runner R --wait` follows
// the move: the old runner stops and backs up, the server moves it, and
// the command returns once it runs on R; a move the server cancels (the
// backup failed) fails the command with the reason.
func TestEnvStartRunnerWait(t *testing.T) {
	w := newBackupCLIWorld(t)
	type result struct {
		errOut string
		err    error
	}
	run := func() <-chan result {
		ch := make(chan result, 1)
		go func() {
			_, errOut, err := runCLI(EnvCommand(), "start", "work", "--runner", "r2", "--wait", "--timeout", "5m")
			ch <- result{errOut, err}
		}()
		return ch
	}
	stopped := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
	// Each move stops it on r1 with a backup: the generation counts them.
	wantStop := func(gen int64) {
		t.Helper()
		testutil.WaitFor(t, "the server to stop it on r1", func() bool {
			spec := w.get(t).GetSpec()
			return spec.GetDesiredPhase() == stopped && spec.GetBackupGeneration() == gen
		})
	}

	// Cancelled: the backup on stop fails.
	done := run()
	wantStop(1)
	w.statusFrom(t, w.r1, stopped, func(st *covev1.EnvironmentStatus) {
		st.ObservedBackupGeneration = 0
		st.BackupProgress = &covev1.BackupProgress{Operation: "backup", StartedAt: timestamppb.Now(),
			State: &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "storage full"}}
	})
	r := testutil.Receive(t, done, "cove env start --runner --wait")
	if r.err == nil || !strings.Contains(r.err.Error(), "cancelled") || !strings.Contains(r.err.Error(), "storage full") {
		t.Fatalf("cancelled move: %v\n%s", r.err, r.errOut)
	}

	// Done: the stop's backup is stored, the environment runs on r2.
	done = run()
	wantStop(2)
	b := w.report(t, 1, "stop", 9)
	w.statusFrom(t, w.r1, stopped, nil)
	testutil.WaitFor(t, "the move to r2", func() bool { return w.get(t).GetMetadata().GetRunnerId() == w.r2.ID })
	w.statusFrom(t, w.r2, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, nil)
	r = testutil.Receive(t, done, "cove env start --runner --wait")
	if r.err != nil || !strings.Contains(r.errOut, "starting on the new runner from backup "+b.Id) {
		t.Fatalf("move --wait: %v\n%s", r.err, r.errOut)
	}
}
