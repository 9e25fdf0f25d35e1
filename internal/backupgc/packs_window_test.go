package backupgc

// A pack condemned "without index" (its writer stalled between the pack
// and its index for more than the grace) whose index appears after the
// sweep first read it, and whose writer then commits before the sweep
// marker is stored, is kept: the sweep reads the doomed packs' indexes
// again once its marker is written (review S13-10).

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// stallIndexPuts blocks every Put under index/ until release is closed.
type stallIndexPuts struct {
	blob.Store
	release chan struct{}
	stalled chan struct{}
	once    sync.Once
}

func (s *stallIndexPuts) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasPrefix(key, backuprepo.IndexPrefix) {
		s.once.Do(func() { close(s.stalled) })
		<-s.release
	}
	return s.Store.Put(ctx, key, r, size)
}

// hookIndexGet runs hook once after a Get under index/ returned not found,
// when armed.
type hookIndexGet struct {
	blob.Store
	mu    sync.Mutex
	armed bool
	hook  func()
}

func (s *hookIndexGet) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, key, rng)
	s.mu.Lock()
	fire := s.armed && strings.HasPrefix(key, backuprepo.IndexPrefix) && blob.IsNotFound(err)
	if fire {
		s.armed = false
	}
	s.mu.Unlock()
	if fire {
		s.hook()
	}
	return rc, err
}

func TestGCStalledIndexBeforeSweepMarker(t *testing.T) {
	ctx := context.Background()
	base := durableStore{newStore(t)}
	k, _ := newKey(t)

	// The writer: its (only) pack is stored, its index Put stalls.
	ws := &stallIndexPuts{Store: base, release: make(chan struct{}), stalled: make(chan struct{})}
	w := startBackup(t, packedRepo(ws, k), "env1-stalled", files("f", 51, 52)...)
	committed := make(chan error, 1)
	go func() { _, err := w.CommitGCSafe(ctx); committed <- err }()
	<-ws.stalled

	cs := &hookIndexGet{Store: base}
	clk := newClock()
	gc := collector(cs, clk, k)
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Condemned != 1 {
		t.Fatalf("mark: %+v, want the pack without index condemned", st)
	}
	// The sweep, a grace later. Right after it found no index, the
	// writer wakes up, stores its index and commits: no marker yet.
	var commitErr error
	cs.hook = func() {
		close(ws.release)
		commitErr = <-committed
	}
	cs.armed = true
	clk.Add(2 * time.Hour)
	st := run(t, gc)
	if commitErr != nil {
		t.Fatalf("the writer's commit was refused (%v): the interleaving did not happen", commitErr)
	}
	t.Logf("sweep: %+v", st)
	rep, err := backuprepo.New(base, k, nil).Check(ctx, "env1-stalled", false)
	if err != nil {
		t.Fatalf("an accepted backup cannot even be opened after the sweep: %v", err)
	}
	if rep.Err() != nil {
		t.Fatalf("an accepted backup lost its pack to the sweep: %v", rep.Err())
	}
}
