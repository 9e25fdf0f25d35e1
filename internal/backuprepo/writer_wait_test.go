package backuprepo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
)

// inFlightStore counts the Puts under way in the store it wraps.
type inFlightStore struct {
	*gatedStore
	inFlight atomic.Int64
}

func (s *inFlightStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	return s.gatedStore.Put(ctx, key, r, size)
}

// TestWaitAfterCancel: a caller giving up on a backup (cancelled, its
// uploads held by a store that never answers) calls Wait: when it returns,
// no upload of that backup is still running, and it reports why they
// stopped.
func TestWaitAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := &inFlightStore{gatedStore: &gatedStore{Store: newMem(), release: make(chan struct{})}} // never released
	r := New(store, testKey(t, 1), nil)
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	// More than a pack: one is being stored when cancelled.
	if err := w.AddFile(ctx, Entry{Path: "f", Mode: 0o644}, bytes.NewReader(randomBytes(6, packTarget+packTarget/2))); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := w.Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait after cancel: %v, want canceled", err)
	}
	if n := store.inFlight.Load(); n != 0 {
		t.Errorf("Wait returned with %d uploads running", n)
	}
	if store.puts.Load() == 0 {
		t.Error("no upload was in flight: the test tests nothing")
	}
}
