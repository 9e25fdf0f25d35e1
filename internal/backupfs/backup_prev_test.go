package backupfs

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/covedev/cove/internal/backuprepo"
)

// manifestOf commits a backup of n directory entries and opens it.
func manifestOf(t *testing.T, repo *backuprepo.Repo, name string, n int) func() *backuprepo.ManifestReader {
	t.Helper()
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, name, testMeta())
	must(t, err)
	must(t, w.Add(ctx, backuprepo.Entry{Path: ".", Type: backuprepo.TypeDir, Mode: 0o755}))
	for i := range n - 1 {
		must(t, w.Add(ctx, backuprepo.Entry{Path: fmt.Sprintf("d%06d", i), Type: backuprepo.TypeDir, Mode: 0o755}))
	}
	_, err = w.Commit(ctx)
	must(t, err)
	return func() *backuprepo.ManifestReader {
		m, err := repo.OpenManifest(ctx, name)
		must(t, err)
		return m
	}
}

// The previous backup read ahead yields what reading it in place yields,
// in order, then io.EOF (and keeps answering io.EOF).
func TestPrevAheadSameEntries(t *testing.T) {
	repo, _ := newRepo(t)
	open := manifestOf(t, repo, "b", 5000)
	direct := open()
	pa := readPrevAhead(context.Background(), open())
	defer pa.stop()
	for i := 0; ; i++ {
		want, werr := direct.Next()
		got, gerr := pa.Next()
		if werr != gerr {
			t.Fatalf("entry %d: error %v, want %v", i, gerr, werr)
		}
		if werr == io.EOF {
			break
		}
		must(t, werr)
		if got.Path != want.Path || got.Type != want.Type {
			t.Fatalf("entry %d: %s %s, want %s %s", i, got.Path, got.Type, want.Path, want.Type)
		}
	}
	if _, err := pa.Next(); err != io.EOF {
		t.Errorf("after the end: %v, want io.EOF", err)
	}
}

// At most prevAheadRefs entries are decoded ahead of the walk, and a walk
// that stops early (a failed backup) stops the reader's goroutine.
func TestPrevAheadBoundedAndStops(t *testing.T) {
	old := prevAheadRefs
	prevAheadRefs = 16
	t.Cleanup(func() { prevAheadRefs = old })
	repo, _ := newRepo(t)
	open := manifestOf(t, repo, "b", 1000)
	pa := readPrevAhead(context.Background(), open())
	for range 3 {
		if _, err := pa.Next(); err != nil {
			t.Fatal(err)
		}
	}
	// The reader fills the budget, then waits for the walk.
	for !pa.budgetFull() {
		runtime.Gosched()
		if n := len(pa.ch); n > int(prevAheadRefs) {
			t.Fatalf("%d entries decoded ahead, more than the budget of %d", n, prevAheadRefs)
		}
	}
	if n := len(pa.ch); n > int(prevAheadRefs) {
		t.Fatalf("%d entries decoded ahead, more than the budget of %d", n, prevAheadRefs)
	}
	pa.stop() // returns: the goroutine is gone
}

// budgetFull reports whether the reader used its whole budget (tests).
func (p *prevAhead) budgetFull() bool {
	if p.budget.TryAcquire(1) {
		p.budget.Release(1)
		return false
	}
	return true
}
