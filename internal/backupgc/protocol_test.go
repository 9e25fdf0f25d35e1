package backupgc

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
)

// Tests of the protocol between sweeps and writers (sweep markers,
// CommitGCSafe) and of collectors running at once.

// A sweep marker that stays without its end (a collector that crashed
// mid-sweep) refuses writers for MaxSweepDuration after it was written;
// one that ended before a writer started does not concern it; markers are
// deleted after their retention. Times are the storage's.
func TestSweepMarkers(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := localblob.New(dir, nil)
	must(t, err)
	defer s.Close()
	k, _ := newKey(t)
	repo := unpackedRepo(s, k)
	// backdate sets a marker's time on the storage's clock.
	backdate := func(id string, d time.Duration) {
		at := time.Now().Add(-d)
		must(t, os.Chtimes(filepath.Join(dir, repo.GCKey("sweeps/"+id)), at, at))
	}
	now := time.Now()
	must(t, repo.PutSweepMarker(ctx, backuprepo.SweepMarker{ID: "crashed", Start: now, Deadline: now.Add(time.Hour)}))
	backdate("crashed", backuprepo.MaxSweepDuration-time.Minute)
	w := startBackup(t, repo, "env1-a", files("f", 70)...)
	if _, err := w.CommitGCSafe(ctx); !errors.Is(err, backuprepo.ErrSwept) {
		t.Fatalf("commit within a crashed sweep's %v: %v", backuprepo.MaxSweepDuration, err)
	}
	backdate("crashed", backuprepo.MaxSweepDuration+time.Minute)
	backup(t, repo, "env1-a", files("f", 70)...) // past the crashed sweep's deadline
	must(t, repo.PutSweepMarker(ctx, backuprepo.SweepMarker{ID: "ended", Start: now, Deadline: now, End: now}))
	backdate("ended", time.Minute)
	backup(t, repo, "env1-b", files("f", 70)...) // a sweep that ended before the writer started: no refusal
	backdate("crashed", backuprepo.MarkerRetention+time.Minute)
	clk := newClock()
	if st := run(t, collector(s, clk, k)); st.Markers != 1 {
		t.Fatalf("old marker not deleted: %+v", st)
	}
	if ms, _ := repo.SweepMarkers(ctx); len(ms) != 1 || ms[0].ID != "ended" {
		t.Fatalf("markers left: %+v, want the recent one", ms)
	}
}

// hookStore runs before once, just before the first Put of a key
// containing match.
type hookStore struct {
	blob.Store
	match  string
	before func()
	done   bool
}

func (h *hookStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if !h.done && strings.Contains(key, h.match) {
		h.done = true
		h.before()
	}
	return h.Store.Put(ctx, key, r, size)
}

// A backup that reuses a condemned chunk and commits after the run's scan
// but before the sweep's marker is accepted (it sees no marker), so the
// sweep must find its manifest when it lists them again, and keep the
// chunk.
func TestWriterCommittingDuringSweepStart(t *testing.T) {
	ctx := context.Background()
	base := newStore(t)
	k, _ := newKey(t)
	repo := unpackedRepo(base, k)
	old := files("f", 80, 81)
	backup(t, repo, "env1-old", old...)
	must(t, base.Delete(ctx, backuprepo.ManifestKey("env1-old")))
	clk := newClock()
	clk.Add(2 * time.Hour)
	run(t, collector(base, clk, k)) // mark

	w := startBackup(t, repo, "env1-new", old...)
	var commitErr error
	hooked := &hookStore{Store: base, match: "/sweeps/", before: func() { _, commitErr = w.CommitGCSafe(ctx) }}
	clk.Add(2 * time.Hour)
	st := run(t, collector(hooked, clk, k))
	if !hooked.done {
		t.Fatal("no sweep marker written: the test must sweep")
	}
	must(t, commitErr)
	if st.Kept < len(old) {
		t.Fatalf("sweep: %+v", st)
	}
	complete(t, repo, "env1-new")
}

// A backup written again under a name the scan already read (a refused
// backup retried under its name) between the scan and the sweep's marker
// is read again by the sweep: a condemned chunk it now reuses is kept.
func TestManifestRewrittenUnderSameName(t *testing.T) {
	ctx := context.Background()
	base := newStore(t)
	k, _ := newKey(t)
	repo := unpackedRepo(base, k)
	old := files("f", 90, 91)
	backup(t, repo, "env1-old", old...)
	must(t, base.Delete(ctx, backuprepo.ManifestKey("env1-old")))
	backup(t, repo, "env1-x", files("g", 92)...)
	clk := newClock()
	clk.Add(2 * time.Hour)
	run(t, collector(base, clk, k)) // mark: old's chunks condemned

	var rewriteErr error
	hooked := &hookStore{Store: base, match: "/sweeps/", before: func() {
		if rewriteErr = base.Delete(ctx, backuprepo.ManifestKey("env1-x")); rewriteErr == nil {
			_, rewriteErr = startBackup(t, repo, "env1-x", old...).CommitGCSafe(ctx)
		}
	}}
	clk.Add(2 * time.Hour)
	run(t, collector(hooked, clk, k))
	if !hooked.done {
		t.Fatal("no sweep marker written: the test must sweep")
	}
	must(t, rewriteErr)
	complete(t, repo, "env1-x")
}

// Collectors of several servers running at once on one storage: no run
// fails, garbage goes, and what a backup needs stays.
func TestReplicasConcurrently(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, _ := newKey(t)
	repo := unpackedRepo(s, k)
	backup(t, repo, "env1-live", files("a", 110, 111)...)
	backup(t, repo, "env1-gone", files("b", 112, 113)...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-gone")))
	clk := newClock()
	gcs := []*Collector{collector(s, clk, k), collector(s, clk, k), collector(s, clk, k)}
	for range 3 {
		clk.Add(2 * time.Hour)
		errs := make(chan error, len(gcs))
		for _, gc := range gcs {
			go func() {
				_, err := gc.Run(ctx)
				errs <- err
			}()
		}
		for range gcs {
			must(t, <-errs)
		}
	}
	for _, seed := range []uint64{112, 113} {
		if exists(t, s, chunkOf(repo, seed)) {
			t.Errorf("garbage chunk %d left", seed)
		}
	}
	complete(t, repo, "env1-live")
	if n := countKeys(t, s, repo.GCKey("condemned/")); n != 0 {
		t.Errorf("%d condemned-list objects left after the last sweep", n)
	}
}
