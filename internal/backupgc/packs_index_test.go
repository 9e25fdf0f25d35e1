package backupgc

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// durableStore hides localblob's Syncer: a store whose Put is durable on
// return, as S3's.
type durableStore struct{ blob.Store }

// A writer stalls between storing its pack and its index (longer than two
// graces: VM suspended, SIGSTOP, a PUT stuck in retries). GC condemns and
// sweeps the pack "without index"; the stalled writer then stores the
// index (its own commit is refused, fine). The index, whose pack is gone,
// must not be trusted by later writers (a backup would commit naming
// chunks stored nowhere), and the collector deletes it.
func TestGCIndexWithoutPackAfterSweep(t *testing.T) {
	ctx := context.Background()
	s := durableStore{newStore(t)}
	k, _ := newKey(t)
	content := files("f", 21, 22)
	backup(t, packedRepo(s, k), "env1-stalled", content...)
	var p backuprepo.PackID
	for q := range packsOf(t, s) {
		p = q
	}
	// The stalled writer: pack stored, index not yet, no manifest.
	rc, err := s.Get(ctx, backuprepo.IndexKey(k.ID(), p), blob.Range{})
	must(t, err)
	index, _ := io.ReadAll(rc)
	rc.Close()
	must(t, s.Delete(ctx, backuprepo.IndexKey(k.ID(), p)))
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-stalled")))

	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	run(t, gc) // mark: a pack without index
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Swept != 1 {
		t.Fatalf("sweep: %+v", st)
	}
	// The writer wakes up and stores its index.
	must(t, s.Put(ctx, backuprepo.IndexKey(k.ID(), p), bytes.NewReader(index), int64(len(index))))
	dropMarkers(t, packedRepo(s, k))

	backup(t, packedRepo(s, k), "env1-later", content...)
	// A later run deletes the index left without its pack.
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Indexes != 1 {
		t.Errorf("gc run: %+v, want the index without its pack deleted", st)
	}
	if exists(t, s, backuprepo.IndexKey(k.ID(), p)) {
		t.Errorf("index %s without its pack is still stored after a GC run", p)
	}
	rep, err := backuprepo.New(s, k, nil).Check(ctx, "env1-later", false)
	if err != nil || rep.Err() != nil {
		t.Errorf("backup committed after the sweep is damaged: %v / %v", err, rep.Err())
	}
}
