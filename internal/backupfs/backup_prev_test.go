package backupfs

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/covedev/cove/internal/backuprepo"
)

// manifestOf commits a backup of n directory entries (each with
// attributes xattrs) and opens it.
func manifestOf(t *testing.T, repo *backuprepo.Repo, name string, n int, xattrs map[string][]byte) func() *backuprepo.ManifestReader {
	t.Helper()
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, name, testMeta())
	must(t, err)
	must(t, w.Add(ctx, backuprepo.Entry{Path: ".", Type: backuprepo.TypeDir, Mode: 0o755}))
	for i := range n - 1 {
		must(t, w.Add(ctx, backuprepo.Entry{Path: fmt.Sprintf("d%06d", i), Type: backuprepo.TypeDir, Mode: 0o755, Xattrs: xattrs}))
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
	t.Run("budget of 5000 entries", func(t *testing.T) { prevAheadSame(t) })
	// Batches wait until full unless the walk took all: a batch holding
	// budget the reader then waits for is sent first (no deadlock).
	t.Run("budget of 3 entries", func(t *testing.T) {
		old := prevAheadBytes
		prevAheadBytes = 3 * int64(entryBytes(&backuprepo.Entry{Path: "d000000"}))
		t.Cleanup(func() { prevAheadBytes = old })
		prevAheadSame(t)
	})
}

func prevAheadSame(t *testing.T) {
	repo, _ := newRepo(t)
	open := manifestOf(t, repo, "b", 5000, nil)
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

// The entries decoded ahead of the walk hold at most prevAheadBytes, and a
// walk that stops early (a failed backup) stops the reader's goroutine.
func TestPrevAheadBoundedAndStops(t *testing.T) {
	old := prevAheadBytes
	prevAheadBytes = 16 * int64(entryBytes(&backuprepo.Entry{Path: "d000000"}))
	t.Cleanup(func() { prevAheadBytes = old })
	repo, _ := newRepo(t)
	open := manifestOf(t, repo, "b", 1000, nil)
	pa := readPrevAhead(context.Background(), open())
	for range 3 {
		if _, err := pa.Next(); err != nil {
			t.Fatal(err)
		}
	}
	// The reader fills the budget, then waits for the walk.
	for !pa.budgetFull() {
		runtime.Gosched()
	}
	items := pa.batch
	for range len(pa.ch) {
		items = append(items, <-pa.ch...)
	}
	if len(items) > 16 {
		t.Fatalf("%d entries decoded ahead, more than the budget of 16", len(items))
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

// The attack on the read-ahead's memory (review REV-S9-2): whoever
// controls the environment gives every entry 200 KiB of attributes; the
// entries decoded ahead still hold at most prevAheadBytes.
func TestPrevAheadBoundedByAttributes(t *testing.T) {
	old := prevAheadBytes
	prevAheadBytes = 1 << 20
	t.Cleanup(func() { prevAheadBytes = old })
	repo, _ := newRepo(t)
	big := map[string][]byte{"user.a": make([]byte, 60<<10), "user.b": make([]byte, 60<<10), "user.c": make([]byte, 60<<10), "user.d": make([]byte, 20<<10)}
	open := manifestOf(t, repo, "b", 200, big)
	pa := readPrevAhead(context.Background(), open())
	defer pa.stop()
	if _, err := pa.Next(); err != nil {
		t.Fatal(err)
	}
	for !pa.budgetFull() {
		runtime.Gosched()
	}
	var held int64
	items := pa.batch // taken from the channel with the first, not yet returned
	for range len(pa.ch) {
		items = append(items, <-pa.ch...)
	}
	for _, it := range items {
		held += int64(entryBytes(it.e))
		defer pa.budget.Release(it.weight)
	}
	if held > prevAheadBytes {
		t.Errorf("%d bytes of entries decoded ahead, more than the budget of %d", held, prevAheadBytes)
	}
	if held < prevAheadBytes/2 {
		t.Errorf("only %d bytes decoded ahead with a budget of %d: the test did not fill it", held, prevAheadBytes)
	}
}
