package backuprepo

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/blob"
)

// statCounter counts the requests a writer makes to the store.
type statCounter struct {
	blob.Store
	stats, puts atomic.Int64
}

func (s *statCounter) Stat(ctx context.Context, key string) (blob.Info, error) {
	s.stats.Add(1)
	return s.Store.Stat(ctx, key)
}

func (s *statCounter) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	s.puts.Add(1)
	return s.Store.Put(ctx, key, r, size)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestRepeatedChunksCostNoRequests (review REV-5): the holes of a sparse
// file are many copies of one all-zero chunk; a content stored twice in
// one backup is the same chunks again. Each distinct chunk is asked about
// and stored once per backup, and the backup restores whole.
func TestRepeatedChunksCostNoRequests(t *testing.T) {
	store := &statCounter{Store: newMem()}
	r := unpacked(store, testKey(t, 1))
	ctx := context.Background()
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	store.stats.Store(0) // NewWriter's look for an existing backup
	const holes = 256 << 20
	refs, size, err := w.StoreContent(ctx, io.LimitReader(zeros{}, holes))
	if err != nil || size != holes {
		t.Fatalf("zeros: %d bytes, %v", size, err)
	}
	if err := w.wait(); err != nil { // uploads run in the background
		t.Fatal(err)
	}
	distinct := map[ChunkID]bool{}
	for _, ref := range refs {
		distinct[ref.ID] = true
	}
	if got := store.stats.Load(); got != int64(len(distinct)) || len(refs) < 2*len(distinct) {
		t.Errorf("%d chunks (%d distinct) cost %d Stat requests, want one per distinct chunk", len(refs), len(distinct), got)
	}
	if got := store.puts.Load(); got != int64(len(distinct)) {
		t.Errorf("%d Puts for %d distinct chunks", got, len(distinct))
	}
	data := randomBytes(3, 9<<20)
	before := store.stats.Load()
	refs1, _, err := w.StoreContent(ctx, bytes.NewReader(data))
	if err == nil {
		err = w.wait()
	}
	if err != nil {
		t.Fatal(err)
	}
	mid := store.stats.Load()
	refs2, _, err := w.StoreContent(ctx, bytes.NewReader(data))
	if err == nil {
		err = w.wait()
	}
	if err != nil {
		t.Fatal(err)
	}
	if mid-before != int64(len(refs1)) || store.stats.Load() != mid || len(refs2) != len(refs1) {
		t.Errorf("the same content stored twice: %d then %d Stat requests", mid-before, store.stats.Load()-mid)
	}
	for i, e := range []Entry{{Path: "holes", Type: TypeFile, Chunks: refs, Size: holes}, {Path: "random", Type: TypeFile, Chunks: refs2, Size: int64(len(data))}} {
		if err := w.Add(ctx, e); err != nil {
			t.Fatal(i, err)
		}
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range readAll(t, r, "b") {
		got := contentOf(t, r, e)
		want := data
		if e.Path == "holes" {
			want = make([]byte, holes)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s restored wrong", e.Path)
		}
	}
}
