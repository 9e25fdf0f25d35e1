package backuprepo

// The crash check lists indexes before packs, and deletes only an index
// whose pack is not listed: a concurrent backup on the same machine
// (another backup child, its own Repo) storing a pack and its index
// between the two listings keeps both (review S13-9).

import (
	"context"
	"iter"
	"strings"
	"sync"
	"testing"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
)

// afterPacksListing runs hook once, right after a List of packs/ ends.
type afterPacksListing struct {
	*localblob.Store
	once sync.Once
	hook func()
}

func (s *afterPacksListing) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	inner := s.Store.List(ctx, prefix)
	if !strings.HasPrefix(prefix, PacksPrefix) {
		return inner
	}
	return func(yield func(blob.Info, error) bool) {
		for info, err := range inner {
			if !yield(info, err) {
				return
			}
		}
		s.once.Do(s.hook)
	}
}

func TestCrashCheckSparesConcurrentPack(t *testing.T) {
	thisMachine(t)
	ctx := context.Background()
	dir := t.TempDir()
	key := testKey(t, 1)
	// Something written before the crash, so the scrub has work.
	first := New(batchedStore(t, dir, key), key, nil)
	backupOf(t, first, "before", randomBytes(1, 100<<10))
	plantCrashMarker(t, dir, key.ID(), thisMachine(t))

	other := batchedStore(t, dir, key) // another backup child, same store
	data := randomBytes(2, 300<<10)
	wrapped := &afterPacksListing{Store: batchedStore(t, dir, key)}
	wrapped.hook = func() {
		// Meanwhile the other child (crash check done, or scrubbing
		// too) takes and commits its backup.
		backupOf(t, New(other, key, nil), "concurrent", data)
	}
	r := New(wrapped, key, nil)
	if _, err := r.NewWriter(ctx, "scrubber", Metadata{}); err != nil { // runs the crash scrub
		t.Fatal(err)
	}
	rep, err := New(other, key, nil).Check(ctx, "concurrent", false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete {
		t.Fatalf("a backup committed during another child's crash check lost its pack: %v", rep.Err())
	}
}
