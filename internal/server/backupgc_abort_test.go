package server_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/server/servertest"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// abortingStore is a store with multipart uploads (as s3blob.Store is): it
// records the ages AbortStale is called with.
type abortingStore struct {
	*localblob.Store
	calls chan time.Duration
}

func (s abortingStore) AbortStale(ctx context.Context, olderThan time.Duration) (int, error) {
	select {
	case s.calls <- olderThan:
	case <-ctx.Done():
	}
	return 0, nil
}

// TestBackupGCAbortsStaleUploads (review REV-10): the server's garbage
// collection job aborts the storage's abandoned multipart uploads — those
// older than a day, never a Put in progress — at each run, as
// docs/backups.md promises. (s3blob's TestServerKilledMidUpload shows
// AbortStale removing a real leftover of a Put cut off by a crash.)
func TestBackupGCAbortsStaleUploads(t *testing.T) {
	bs, err := localblob.New(filepath.Join(t.TempDir(), "backups"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	store := abortingStore{Store: bs, calls: make(chan time.Duration, 1)}
	s := servertest.Start(t, servertest.Options{Configure: func(c *server.Config) {
		c.BackupStore = store
		c.BackupStorage = &covev1.BackupStorage{Kind: "s3", Bucket: "unused"}
	}})
	cfg := server.DefaultBackupGCConfig()
	if cfg.StaleUploads < 24*time.Hour {
		t.Fatalf("default age of stale uploads %v: a Put in progress could be aborted", cfg.StaleUploads)
	}
	ctx, cancel := context.WithCancel(testutil.Context(t))
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Server.RunBackupGC(ctx, cfg)
	}()
	if got := testutil.Receive(t, store.calls, "the GC run to abort stale uploads"); got != cfg.StaleUploads {
		t.Errorf("AbortStale(%v), want uploads older than %v", got, cfg.StaleUploads)
	}
	cancel()
	testutil.Receive(t, done, "the GC job to end")
}
