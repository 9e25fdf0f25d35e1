package backuprepo

// When the newest copy's pack is shorter than its index says (truncated
// by a crash, a partial restore of the bucket), the read falls back to
// another copy the index knows (review S13-13).

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob"
)

func TestTruncatedCopyReadElsewhere(t *testing.T) {
	ctx := context.Background()
	base, dir := newLocal(t)
	s := durable{base}
	r := New(s, testKey(t, 1), nil)
	data := randomBytes(11, 100<<10)
	backupOf(t, r, "a", data)
	_, p1, _ := ParseIndexKey(keys(t, s, IndexPrefix)[0])
	entries, err := r.ReadIndex(ctx, p1)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := s.Get(ctx, r.PackKey(p1), blob.Range{})
	packData, _ := io.ReadAll(rc)
	rc.Close()
	p2 := PackID{0xee}
	if _, err := r.putPack(ctx, p2, bytes.Clone(packData), entries); err != nil { // the newer copy
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, r.IndexKey(p2)), later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.PackKey(p2)), packData[:len(packData)/3], 0o600); err != nil { // truncated
		t.Fatal(err)
	}
	ref := ChunkRef{ID: r.ChunkIDOf(data), Size: uint32(len(data))}
	fresh := New(s, testKey(t, 1), nil)
	if err := fresh.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := fresh.Locate(ref.ID); l.Pack != p2 {
		t.Fatalf("the index points at %s, not the newer copy", l.Pack)
	}
	if got, err := fresh.GetChunk(ctx, ref); err != nil || !bytes.Equal(got, data) {
		t.Errorf("chunk with a good older copy, the newer one truncated: %v", err)
	}
}
