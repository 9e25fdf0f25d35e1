package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/server/servertest"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// backupWorld is a server with backup storage in a directory, a clock the
// test moves, an owner (alice), a member (bob) and two runners, r1 (older:
// gets new environments first) and r2.
type backupWorld struct {
	h      *harness
	store  store.Store
	mu     sync.Mutex
	now    time.Time
	log    *lockedBuffer
	alice  *user
	bob    *user
	r1, r2 covev1connect.RunnerServiceClient
	id1    string
	id2    string
	blobs  blob.Store // the server's backup storage
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var backupCaps = &covev1.RunnerCapabilities{Runtimes: []string{"container"}, Cpus: 4, MemoryBytes: 8 << 30,
	Classes: []*covev1.EnvironmentClass{{Id: "default", Cpus: 1, MemoryBytes: 1 << 30}}}

func newBackupWorld(t *testing.T, configure func(*server.Config)) *backupWorld {
	t.Helper()
	w := &backupWorld{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), log: &lockedBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log:\n%s", w.log)
		}
	})
	storage := &covev1.BackupStorage{Kind: "dir", Dir: t.TempDir()}
	bs, err := server.OpenBackupStorage(testutil.Context(t), storage, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, servertest.Options{NoAdmin: true, Configure: func(c *server.Config) {
		c.Now = w.clock
		c.Log = slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.RunnerTimeout = time.Hour
		c.RescheduleAfter = 2 * time.Hour
		c.AutoStopInterval = 10000 * time.Hour
		c.DefaultInactivity = -1
		c.BackupStorage, c.BackupStore = storage, bs
		if configure != nil {
			configure(c)
		}
	}})
	w.h, w.store, w.blobs = &harness{srv: srv.Server, url: srv.URL}, srv.Store, bs
	w.alice = w.h.owner(t)
	w.bob = w.h.member(t, w.alice, "bob")
	w.r1, w.id1, _ = w.h.joinRunner(t, w.alice, "r1", backupCaps)
	w.advance(time.Second)
	w.r2, w.id2, _ = w.h.joinRunner(t, w.alice, "r2", backupCaps)
	return w
}

func (w *backupWorld) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *backupWorld) advance(d time.Duration) {
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.mu.Unlock()
}

func (w *backupWorld) heartbeat(t *testing.T, r covev1connect.RunnerServiceClient) {
	t.Helper()
	if _, err := r.Heartbeat(context.Background(), connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: backupCaps})); err != nil {
		t.Fatal(err)
	}
}

// running creates one of u's environments and has its runner report it
// RUNNING. New environments go to the least loaded runner, r1 on a tie.
func (w *backupWorld) running(t *testing.T, u *user, name string) *covev1.Environment {
	t.Helper()
	env, err := u.create(name, gitSpec("https://example.com/repo.git"))
	if err != nil {
		t.Fatal(err)
	}
	r := w.runner(t, env)
	w.status(t, r, env.Id, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, nil)
	return w.get(t, u, env.Id)
}

// runner is the client of env's runner.
func (w *backupWorld) runner(t *testing.T, env *covev1.Environment) covev1connect.RunnerServiceClient {
	t.Helper()
	switch env.GetMetadata().GetRunnerId() {
	case w.id1:
		return w.r1
	case w.id2:
		return w.r2
	}
	t.Fatalf("environment %s is on runner %q: %s", env.GetMetadata().GetName(), env.GetMetadata().GetRunnerId(), env.GetStatus().GetFailureMessage())
	return nil
}

// status has runner r report phase, acknowledging the current spec.
func (w *backupWorld) status(t *testing.T, r covev1connect.RunnerServiceClient, id string, phase covev1.EnvironmentPhase, edit func(*covev1.EnvironmentStatus)) {
	t.Helper()
	env := w.get(t, w.alice, id)
	if env.GetMetadata().GetOwnerId() == "" {
		env = w.get(t, w.bob, id)
	}
	st := &covev1.EnvironmentStatus{Phase: phase, ObservedSpecVersion: env.GetSpec().GetSpecVersion(),
		ObservedBackupGeneration: env.GetSpec().GetBackupGeneration(), ObservedRestoreGeneration: env.GetSpec().GetRestore().GetGeneration()}
	if edit != nil {
		edit(st)
	}
	if _, err := r.ReportStatus(context.Background(), connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: id, Status: st})); err != nil {
		t.Fatal(err)
	}
}

// get reads an environment as u would ("" owner if u cannot see it).
func (w *backupWorld) get(t *testing.T, u *user, id string) *covev1.Environment {
	t.Helper()
	resp, err := u.envs.GetEnvironment(context.Background(), connect.NewRequest(&covev1.GetEnvironmentRequest{Id: id}))
	if code(err) == connect.CodeNotFound {
		return &covev1.Environment{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.Environment
}

// backup is a valid report of a backup of env taken at the clock's time.
func (w *backupWorld) backup(env *covev1.Environment, n int, trigger string) *covev1.Backup {
	return &covev1.Backup{Id: fmt.Sprintf("%s/b%d", env.Id, n), EnvironmentId: env.Id, Time: timestamppb.New(w.clock()), Trigger: trigger,
		Files: 3, Bytes: 300, BytesNew: 100, BytesReused: 200, StoredBytes: 120, DurationMs: 50}
}

// report has runner r report backup b, after storing a manifest for it
// (the server records only backups whose manifest is in storage).
func (w *backupWorld) report(r covev1connect.RunnerServiceClient, b *covev1.Backup) error {
	if key := "manifests/" + b.GetId(); blob.ValidateKey(key) == nil {
		if err := w.blobs.Put(context.Background(), key, strings.NewReader("manifest"), int64(len("manifest"))); err != nil {
			return err
		}
	}
	return w.reportOnly(r, b)
}

// reportOnly reports b without storing anything.
func (w *backupWorld) reportOnly(r covev1connect.RunnerServiceClient, b *covev1.Backup) error {
	_, err := r.ReportBackup(context.Background(), connect.NewRequest(&covev1.ReportBackupRequest{Backup: b}))
	return err
}

func (w *backupWorld) list(t *testing.T, u *user, env string) ([]*covev1.Backup, error) {
	t.Helper()
	resp, err := u.envs.ListBackups(context.Background(), connect.NewRequest(&covev1.ListBackupsRequest{EnvironmentId: env}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Backups, nil
}

func access(r covev1connect.RunnerServiceClient, env string) (*covev1.GetBackupAccessResponse, error) {
	resp, err := r.GetBackupAccess(context.Background(), connect.NewRequest(&covev1.GetBackupAccessRequest{EnvironmentId: env}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// TestBackupAccessOnlyForTheAssignedRunner: the runner an environment is
// assigned to gets the storage and its organization's key; another runner
// asking for it, or for an environment that does not exist, gets the same
// refusal and no key; users get nothing; the key is never logged.
func TestBackupAccessOnlyForTheAssignedRunner(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	got, err := access(w.r1, env.Id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Key) != 32 || got.Storage.GetKind() != "dir" || got.Storage.GetDir() == "" {
		t.Fatalf("assigned runner got key of %d bytes, storage %v", len(got.Key), got.Storage)
	}
	again, err := access(w.r1, env.Id)
	if err != nil || !bytes.Equal(again.Key, got.Key) {
		t.Fatalf("second call: %v; key stable: %v", err, err == nil && bytes.Equal(again.Key, got.Key))
	}

	// r2 asks for r1's environment, and for one that does not exist.
	_, errOther := access(w.r2, env.Id)
	_, errMissing := access(w.r2, "0123456789abcdef")
	for what, err := range map[string]error{"another runner's environment": errOther, "a missing environment": errMissing} {
		if code(err) != connect.CodeNotFound || !strings.Contains(message(err), "is not assigned to this runner") {
			t.Errorf("%s: %v; want NotFound, not assigned", what, err)
		}
	}
	// Users (even the owner of the environment) and anonymous callers.
	for who, c := range map[string]covev1connect.RunnerServiceClient{"its owner": w.alice.runners, "anonymous": w.h.client("").runners} {
		resp, err := c.GetBackupAccess(context.Background(), connect.NewRequest(&covev1.GetBackupAccessRequest{EnvironmentId: env.Id}))
		if code(err) != connect.CodeUnauthenticated || resp != nil {
			t.Errorf("%s: %v; want Unauthenticated and nothing", who, err)
		}
	}
	log := w.log.String()
	for _, enc := range []string{hex.EncodeToString(got.Key), base64.StdEncoding.EncodeToString(got.Key), base64.RawURLEncoding.EncodeToString(got.Key)} {
		if strings.Contains(log, enc) {
			t.Fatal("the backup key is in the server's log")
		}
	}
}

// TestBackupsDisabled: without storage, runners get no storage nor key,
// reports and user calls are refused with a message naming the setting.
func TestBackupsDisabled(t *testing.T) {
	w := newBackupWorld(t, func(c *server.Config) { c.BackupStorage, c.BackupStore = nil, nil })
	env := w.running(t, w.alice, "work")
	got, err := access(w.r1, env.Id)
	if err != nil || got.Storage != nil || len(got.Key) != 0 {
		t.Fatalf("access with backups disabled: %v, storage %v, %d key bytes; want none", err, got.GetStorage(), len(got.GetKey()))
	}
	if err := w.report(w.r1, w.backup(env, 1, "stop")); code(err) != connect.CodeFailedPrecondition {
		t.Errorf("report: %v, want FailedPrecondition", err)
	}
	_, err = w.alice.envs.BackupEnvironment(context.Background(), connect.NewRequest(&covev1.BackupEnvironmentRequest{Id: env.Id}))
	if code(err) != connect.CodeFailedPrecondition || !strings.Contains(message(err), "--backups=false") {
		t.Errorf("backup: %v", err)
	}
	_, err = w.alice.envs.UpdateEnvironment(context.Background(), connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: env.Id,
		DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, RunnerId: "r2"}))
	if code(err) != connect.CodeFailedPrecondition || !strings.Contains(message(err), "backups") {
		t.Errorf("move: %v", err)
	}
	if e := w.get(t, w.alice, env.Id); e.GetMetadata().GetRunnerId() != w.id1 || e.GetSpec().GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		t.Errorf("a refused move changed the environment: runner %s, desired %v", e.GetMetadata().GetRunnerId(), e.GetSpec().GetDesiredPhase())
	}
}
