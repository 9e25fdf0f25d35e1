package backuprepo

import (
	"context"
	"io"
	"os"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/blob"
)

// countingStore counts the bytes read through Get.
type countingStore struct {
	blob.Store
	read atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, key, rng)
	if err != nil {
		return nil, err
	}
	return countingReader{rc, &s.read}, nil
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// TestOversizedChunkObjectNotReadWhole performs the attack on a
// restore's memory bound: someone who can write the bucket (a runner
// holding its credentials and the key, docs/backups.md REV-2) puts a
// chunk object of the largest size (a validly sealed 4 MiB payload) under
// the id of a small file's chunk. A restore admits that chunk by the
// manifest's size (restore_pool.go's byte budget), so reading the whole
// object would let each of its workers hold about 4 MiB sealed, 4 MiB
// opened, whatever the budget. GetChunk must refuse it as corrupt having
// read no more than a chunk of the manifest's size can take sealed.
func TestOversizedChunkObjectNotReadWhole(t *testing.T) {
	ctx := context.Background()
	s, dir := newLocal(t)
	cs := &countingStore{Store: s}
	r := unpacked(cs, testKey(t, 1))
	backup(t, r, "b", tree(), "")
	ref := fileEntry(t, r, "b", "src/main.go").Chunks[0]
	if ref.Size == 0 || int(ref.Size) >= MaxChunkSize/4 {
		t.Fatalf("src/main.go's chunk is %d bytes; the test wants a small one", ref.Size)
	}
	orig, err := os.ReadFile(chunkFile(dir, ref.ID))
	if err != nil {
		t.Fatal(err)
	}
	big, err := r.key.seal(kindChunk, ref.ID.String(), randomBytes(7, MaxPayload))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chunkFile(dir, ref.ID), big, 0o600); err != nil {
		t.Fatal(err)
	}
	cs.read.Store(0)
	data, err := r.GetChunk(ctx, ref)
	if !IsCorrupt(err) || data != nil {
		t.Fatalf("a %d-byte object under a %d-byte chunk's id: %d bytes, %v; want a corruption error", len(big), ref.Size, len(data), err)
	}
	if n, limit := cs.read.Load(), int64(sealedHint(ref.Size)); n > limit {
		t.Fatalf("read %d bytes of the %d-byte object for a %d-byte chunk; at most %d (what it can take sealed)", n, len(big), ref.Size, limit)
	}
	// The bound is not too tight: the objects as written still read, the
	// small one and the largest incompressible one.
	if err := os.WriteFile(chunkFile(dir, ref.ID), orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := r.GetChunk(ctx, ref); err != nil || string(data) != "package main\n" {
		t.Fatalf("the small chunk as written: %q, %v", data, err)
	}
	for _, c := range fileEntry(t, r, "b", "bin/tool").Chunks {
		if data, err := r.GetChunk(ctx, c); err != nil || len(data) != int(c.Size) {
			t.Fatalf("bin/tool's chunk of %d bytes: %d bytes, %v", c.Size, len(data), err)
		}
	}
}
