package runner

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob/s3blob"
	"github.com/covedev/cove/internal/blob/s3blob/s3test"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestBackupAndRestoreOnS3: the backup child stores a stop's backup on
// S3-compatible storage (versitygw on loopback, as the server hands it
// out: endpoint, bucket, prefix, credentials, path-style) and a start on
// a runner that lost the environment's directory restores it from there.
func TestBackupAndRestoreOnS3(t *testing.T) {
	c, srv := newBackupWorld(t)
	s3 := s3test.Start(t)
	cfg := s3.Config(s3.Bucket(t), "cove/")
	srv.s3 = &covev1.BackupStorage{Kind: "s3", Endpoint: cfg.Endpoint, Region: cfg.Region, Bucket: cfg.Bucket, Prefix: cfg.Prefix,
		AccessKeyId: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, PathStyle: true}
	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	writeFile(t, filepath.Join(lay.Workspace(), "app/work.txt"), "on s3\n")
	writeFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool"), "installed\n")
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	got := srv.backups()
	if len(got) != 1 || got[0].GetTrigger() != "stop" || got[0].GetStoredBytes() == 0 {
		t.Fatalf("reported %v, want one stop backup stored on S3", got)
	}
	if m := manifests(t, srv.storage); len(m) != 0 {
		t.Fatalf("the directory storage holds %v: the backup did not go to S3", m)
	}

	if err := os.RemoveAll(lay.Dir); err != nil {
		t.Fatal(err)
	}
	env.Status = &covev1.EnvironmentStatus{LastBackup: got[0]} // as the server keeps it
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if got := readFile(t, filepath.Join(lay.Workspace(), "app/work.txt")); got != "on s3\n" {
		t.Errorf("work.txt %q after a restore from S3", got)
	}
	if got := readFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool")); got != "installed\n" {
		t.Errorf("tool %q after a restore from S3", got)
	}
	if c.clones != 1 {
		t.Errorf("cloned %d times, want the backup restored instead of a second clone", c.clones)
	}
}

// TestS3KilledMidUpload: the S3 server killed -9 while a stop's backup
// uploads its chunks (its first pack's PUT held at the server's door until
// the server is dead): the backup fails cleanly —
// no manifest in the bucket, nothing reported to the server, no backup
// listed — and the stop tries it again once the wait before its retry is
// over (the server back meanwhile, over the same directory): then it is
// taken whole, reported, and restores to the content it was taken of.
func TestS3KilledMidUpload(t *testing.T) {
	c, srv := newBackupWorld(t)
	s3 := s3test.Start(t)
	bucket := s3.Bucket(t)

	// The runner's way to the server: a proxy that holds the first pack
	// upload while gate is on, until the server is killed.
	upstream, err := url.Parse(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.ErrorHandler = func(http.ResponseWriter, *http.Request, error) {
		panic(http.ErrAbortHandler) // the connection breaks off, as with the server itself
	}
	var gate, held atomic.Bool
	reached, killed := make(chan struct{}), make(chan struct{})
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gate.Load() && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/packs/") && held.CompareAndSwap(false, true) {
			close(reached)
			<-killed
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	go func() {
		select {
		case <-reached:
			s3.Kill()
			close(killed)
		case <-t.Context().Done():
		}
	}()
	cfg := s3.Config(bucket, "cove/")
	srv.s3 = &covev1.BackupStorage{Kind: "s3", Endpoint: proxy.URL, Region: cfg.Region, Bucket: cfg.Bucket, Prefix: cfg.Prefix,
		AccessKeyId: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, PathStyle: true}
	// The test's own view of the bucket, past the proxy.
	direct, err := s3blob.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stored := func() []string {
		t.Helper()
		var names []string
		for info, err := range direct.List(t.Context(), "manifests/") {
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, strings.TrimPrefix(info.Key, "manifests/"))
		}
		return names
	}

	env := c.env()
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	lay := c.runner(0, false).layout(env.Id)
	big := make([]byte, 8<<20) // several chunks, a pack stored while the backup goes on
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lay.Workspace(), "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool"), "installed\n")

	// The stop: its backup's first try meets the killed server; the wait
	// before the next try is where the server comes back.
	var (
		restarted          bool
		retryWait          time.Duration
		manifestsWhileDown []string
		reportedWhileDown  int
		progressWhileDown  *covev1.BackupProgress
	)
	clk := &hookClock{after: func(d time.Duration) {
		select {
		case <-killed:
		default:
			return // not the wait after the kill
		}
		if restarted {
			return
		}
		restarted, retryWait = true, d
		s3.Restart(t)
		manifestsWhileDown, reportedWhileDown = stored(), len(srv.backups())
		// What the server is told while the stop waits (sent in the
		// background): the failure and the retry to come.
		testutil.WaitFor(t, "the failed try reported", func() bool {
			c.srv.mu.Lock()
			defer c.srv.mu.Unlock()
			progressWhileDown = c.srv.last[env.Id].GetBackupProgress()
			return strings.Contains(progressWhileDown.GetState().GetMessage(), "trying again")
		})
	}}
	gate.Store(true)
	r := backupRunner(c)
	r.clock = clk
	var logs syncBuffer
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	c.converge(r, env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseStopped })
	gate.Store(false)

	if !held.Load() || !restarted || retryWait != stopBackupRetries[0] {
		t.Fatalf("pack upload held: %v; the stop waited to try again after the kill: %v (wait %s, want %s)", held.Load(), restarted, retryWait, stopBackupRetries[0])
	}
	if len(manifestsWhileDown) != 0 || reportedWhileDown != 0 {
		t.Fatalf("after the failed try: manifests %v in the bucket, %d backups reported; want none", manifestsWhileDown, reportedWhileDown)
	}
	if msg := progressWhileDown.GetState().GetMessage(); progressWhileDown.GetState().GetPhase() != subInProgress ||
		!strings.Contains(msg, "backup failed") || !strings.Contains(msg, "trying again in "+stopBackupRetries[0].String()) ||
		!(strings.Contains(msg, "cannot reach the storage") || strings.Contains(msg, "connection to the storage failed")) {
		t.Errorf("progress reported while the stop waits to try again: %v; want in progress, saying the storage could not be reached and when it tries again", progressWhileDown)
	}
	if l := logs.String(); !strings.Contains(l, "backup on stop failed; trying again") || !strings.Contains(l, "store pack: blob put") || !strings.Contains(l, "cove/packs/") {
		t.Fatalf("the runner's log does not show the stop's backup failing on a pack upload and tried again:\n%s", l)
	}
	got := srv.backups()
	if len(got) != 1 || got[0].GetTrigger() != "stop" {
		t.Fatalf("reported %v, want the stop's backup, taken on the retry", got)
	}
	if m := stored(); len(m) != 1 || m[0] != got[0].GetId() {
		t.Fatalf("manifests %v in the bucket, want %s only", m, got[0].GetId())
	}
	last := c.srv.last[env.Id]
	if last.GetPhase() != phaseStopped || last.GetBackupProgress().GetState().GetPhase() != subReady || last.GetLastBackup().GetId() != got[0].GetId() {
		t.Fatalf("status %s, progress %v, last backup %v", last.GetPhase(), last.GetBackupProgress(), last.GetLastBackup())
	}

	// The retried backup is whole: a runner that lost the directory
	// restores it.
	if err := os.RemoveAll(lay.Dir); err != nil {
		t.Fatal(err)
	}
	env.Status = &covev1.EnvironmentStatus{LastBackup: got[0]}
	c.converge(backupRunner(c), env, func(s *covev1.EnvironmentSpec) { s.DesiredPhase = phaseRunning })
	if b, err := os.ReadFile(filepath.Join(lay.Workspace(), "big.bin")); err != nil || !bytes.Equal(b, big) {
		t.Errorf("big.bin after the restore: %d bytes (%v), want the %d written", len(b), err, len(big))
	}
	if got := readFile(t, filepath.Join(lay.Upper(), "usr/local/bin/tool")); got != "installed\n" {
		t.Errorf("tool %q after the restore", got)
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// hookClock is the real clock whose timers fire at once, after calling
// after (in the caller's goroutine).
type hookClock struct {
	realClock
	after func(time.Duration)
}

func (h *hookClock) After(d time.Duration) <-chan time.Time {
	h.after(d)
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}
