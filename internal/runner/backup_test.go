package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/runtime/runtimetest"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// backupServer is a server with backups enabled (a directory storage):
// it records the backups reported and can refuse reports.
type backupServer struct {
	*lastStatus
	storage string
	key     []byte

	mu          sync.Mutex
	reported    []*covev1.Backup
	refuse      bool         // ReportBackup answers Unavailable
	refuseCode  connect.Code // ReportBackup answers this (0: nothing)
	reportCalls int
	accessFails int // GetBackupAccess answers Unavailable this many more times
	accessCalls int
	s3          *covev1.BackupStorage // if set, the storage handed out (else the directory)
	// onReport, if set, sees each report first; an error refuses it.
	onReport func(*covev1.Backup) error
}

func (s *backupServer) GetBackupAccess(context.Context, *connect.Request[covev1.GetBackupAccessRequest]) (*connect.Response[covev1.GetBackupAccessResponse], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accessCalls++
	if s.accessFails > 0 {
		s.accessFails--
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}
	if s.s3 != nil {
		return connect.NewResponse(&covev1.GetBackupAccessResponse{Storage: s.s3, Key: s.key}), nil
	}
	return connect.NewResponse(&covev1.GetBackupAccessResponse{Storage: &covev1.BackupStorage{Kind: "dir", Dir: s.storage}, Key: s.key}), nil
}

func (s *backupServer) ReportBackup(_ context.Context, req *connect.Request[covev1.ReportBackupRequest]) (*connect.Response[covev1.ReportBackupResponse], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reportCalls++
	if s.refuse {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}
	if s.refuseCode != 0 {
		return nil, connect.NewError(s.refuseCode, errors.New("refused"))
	}
	if s.onReport != nil {
		if err := s.onReport(req.Msg.GetBackup()); err != nil {
			return nil, err
		}
	}
	s.reported = append(s.reported, req.Msg.GetBackup())
	return connect.NewResponse(&covev1.ReportBackupResponse{}), nil
}

func (s *backupServer) backups() []*covev1.Backup {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*covev1.Backup(nil), s.reported...)
}

// newBackupWorld is a crash world whose server has backups enabled;
// its runners run the backup child in-process (inProcessChild).
func newBackupWorld(t *testing.T) (*crashWorld, *backupServer) {
	if os.Getuid() != 0 {
		t.Skip("backups chown files into the environment's range: needs root")
	}
	key, err := backuprepo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := &backupServer{lastStatus: &lastStatus{last: map[string]*covev1.EnvironmentStatus{}}, storage: t.TempDir(), key: key}
	path, h := covev1connect.NewRunnerServiceHandler(srv)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	dir := t.TempDir()
	c := &crashWorld{t: t, dir: dir, rt: runtimetest.NewFake(), images: newFakeImages(filepath.Join(dir, "fake-layers")), srv: srv.lastStatus,
		api: &client{id: "runner1", api: covev1connect.NewRunnerServiceClient(hs.Client(), hs.URL)}}
	return c, srv
}

// backupRunner is c.runner with the backup child in-process.
func backupRunner(c *crashWorld) *Runner {
	r := c.runner(0, false)
	r.bk.start = inProcessChild(nil)
	return r
}

// inProcessChild runs BackupChild in a goroutine, as `cove
// internal-backup` would run it; gate, if set, is waited for before the
// runner's "walk" reaches the child.
func inProcessChild(gate <-chan struct{}) childStarter {
	return func(ctx context.Context) (io.WriteCloser, io.ReadCloser, func() error, error) {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		childIn := io.Reader(inR)
		if gate != nil {
			childIn = &gatedReader{r: inR, gate: gate}
		}
		done := make(chan error, 1)
		go func() {
			err := BackupChild(ctx, childIn, outW, slog.New(slog.DiscardHandler))
			outW.CloseWithError(io.EOF)
			inR.Close()
			done <- err
		}()
		return inW, outR, func() error { return <-done }, nil
	}
}

// gatedReader passes the job line at once and what follows (the walk)
// only once gate is closed.
type gatedReader struct {
	r      io.Reader
	gate   <-chan struct{}
	jobEnd bool
}

func (g *gatedReader) Read(p []byte) (int, error) {
	n, err := g.r.Read(p) // the runner's write returns: it is not held up
	if g.jobEnd {
		<-g.gate
	}
	if n > 0 && strings.Contains(string(p[:n]), "\n") {
		g.jobEnd = true
	}
	return n, err
}

// manifests lists the backups in a directory storage.
func manifests(t *testing.T, dir string) []string {
	t.Helper()
	s, err := localblob.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []string
	for info, err := range s.List(context.Background(), "manifests/") {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimPrefix(info.Key, "manifests/"))
	}
	return out
}

func writeFile(t *testing.T, p, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestStopBacksUp: a stop backs the environment up (workspace, upper
// directory, volumes) before it is reported STOPPED, the server hears of
// it, and a second stop with nothing run in between takes none.
func TestStopBacksUp(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool"), "installed\n")
	writeFile(t, filepath.Join(lay.Volumes(), "data/db"), "rows\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })

	got := srv.backups()
	if len(got) != 1 || got[0].GetTrigger() != "stop" || got[0].GetEnvironmentId() != env.Id || got[0].GetRunnerId() != "runner1" {
		t.Fatalf("reported backups %v, want one stop backup", got)
	}
	if got[0].GetFiles() < 3 || got[0].GetFrozenMs() != 0 {
		t.Errorf("backup %v: want the README, the tool and the volume's file, not frozen (stopped)", got[0])
	}
	if m := manifests(t, srv.storage); len(m) != 1 || m[0] != got[0].GetId() {
		t.Fatalf("storage holds %v, want %s", m, got[0].GetId())
	}
	last := c.srv.last[env.Id]
	if last.GetPhase() != phaseStopped || last.GetLastBackup().GetId() != got[0].GetId() || last.GetBackupProgress().GetState().GetPhase() != subReady {
		t.Errorf("last status %s, last backup %v, progress %v", last.GetPhase(), last.GetLastBackup(), last.GetBackupProgress())
	}
	// Stopped again (a new spec version) with nothing run: no backup.
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {})
	if n := len(srv.backups()); n != 1 {
		t.Errorf("%d backups after a second stop with nothing run, want 1", n)
	}
	// Start, stop: incremental from the first.
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	writeFile(t, filepath.Join(lay.Workspace(), "app/new.txt"), "new\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	got = srv.backups()
	if len(got) != 2 || got[1].GetPrevious() != got[0].GetId() {
		t.Fatalf("backups %v, want a second one incremental from the first", got)
	}
}

// TestBackupReportedAgain: a backup the server could not be told of is
// in storage all the same, and a later pass (of a restarted runner)
// reports it.
func TestBackupReportedAgain(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	srv.mu.Lock()
	srv.refuse = true
	srv.mu.Unlock()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	if n := len(srv.backups()); n != 0 {
		t.Fatalf("%d backups reported to a server refusing them", n)
	}
	stored := manifests(t, srv.storage)
	if len(stored) != 1 {
		t.Fatalf("storage holds %v, want the backup", stored)
	}
	srv.mu.Lock()
	srv.refuse = false
	srv.mu.Unlock()
	// A restarted runner's first pass.
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) {})
	if got := srv.backups(); len(got) != 1 || got[0].GetId() != stored[0] {
		t.Fatalf("reported %v after the restart, want %s", got, stored[0])
	}
	st, _ := loadState(c.runner(0, false).layout(env.Id).State())
	if !st.Backup.Reported {
		t.Error("state does not record the report")
	}
}

// TestBackupsDisabled: a server without backup storage (Unimplemented)
// stops environments as before, with no backup and no failure.
func TestBackupsDisabled(t *testing.T) {
	c := newCrashWorld(t)
	env := c.env()
	c.converge(c.runner(0, false), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	c.converge(c.runner(0, false), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped; s.BackupGeneration = 1 })
	last := c.srv.last[env.Id]
	if last.GetPhase() != phaseStopped || last.GetLastBackup() != nil || last.GetBackupProgress() != nil || last.GetObservedBackupGeneration() != 1 {
		t.Fatalf("status %v", last)
	}
}

// TestStopBackupRetried: a stop's backup that failed for a reason that
// passes (the server or the storage unreachable) is tried again before
// the stop is reported, and taken; one that keeps failing lets the stop
// go on with the failure shown, after a bounded number of tries.
func TestStopBackupRetried(t *testing.T) {
	c, srv := newBackupWorld(t)
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	srv.mu.Lock()
	srv.accessFails = 2
	srv.mu.Unlock()
	r := backupRunner(c)
	r.clock = elapsedClock{}
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	if got := srv.backups(); len(got) != 1 || got[0].GetTrigger() != "stop" {
		t.Fatalf("reported %v after two transient failures, want the stop's backup", got)
	}
	if last := c.srv.last[env.Id]; last.GetPhase() != phaseStopped || last.GetBackupProgress().GetState().GetPhase() != subReady {
		t.Fatalf("status %s, progress %v", last.GetPhase(), last.GetBackupProgress())
	}

	// Down for good: the stop goes on after the last try, the failure shown.
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	srv.mu.Lock()
	srv.accessFails, srv.accessCalls = 1000, 0
	srv.mu.Unlock()
	r = backupRunner(c)
	r.clock = elapsedClock{}
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	srv.mu.Lock()
	calls := srv.accessCalls
	srv.mu.Unlock()
	if calls != len(stopBackupRetries)+1 {
		t.Errorf("%d tries, want %d", calls, len(stopBackupRetries)+1)
	}
	last := c.srv.last[env.Id]
	if last.GetPhase() != phaseStopped || last.GetBackupProgress().GetState().GetPhase() != subFailed {
		t.Fatalf("status %s, progress %v: want STOPPED with the backup's failure", last.GetPhase(), last.GetBackupProgress())
	}
	if n := len(srv.backups()); n != 1 {
		t.Errorf("%d backups reported, want still 1", n)
	}
}
