package backuprepo

import (
	"bytes"
	"context"
	"testing"
)

// TestChunkIDsOfBothKinds: new chunks get keyed BLAKE3 ids; a chunk stored
// under its older BLAKE2b id still reads; content sealed by a holder of
// the key under another content's id, of either kind, is refused.
func TestChunkIDsOfBothKinds(t *testing.T) {
	ctx := context.Background()
	r := New(newMem(), testKey(t, 5), nil)
	x, y := randomBytes(1, 100<<10), randomBytes(2, 100<<10)
	ref, _, err := r.PutChunk(ctx, x)
	if err != nil {
		t.Fatal(err)
	}
	if ref.ID != r.ChunkIDOf(x) || ref.ID == r.oldChunkIDOf(x) {
		t.Fatalf("new chunk's id %s: want the keyed BLAKE3 hash", ref.ID)
	}
	oldRef, _, err := r.putChunk(ctx, r.oldChunkIDOf(y), y)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.GetChunk(ctx, oldRef); err != nil || !bytes.Equal(got, y) {
		t.Fatalf("chunk under its BLAKE2b id: %v", err)
	}
	z := randomBytes(4, 100<<10) // never stored
	for kind, id := range map[string]ChunkID{"BLAKE3": r.ChunkIDOf(z), "BLAKE2b": r.oldChunkIDOf(z)} {
		planted, _, err := r.putChunk(ctx, id, x) // x's content, sealed as z's
		if err != nil {
			t.Fatal(err)
		}
		if data, err := r.GetChunk(ctx, planted); !IsCorrupt(err) || data != nil {
			t.Errorf("other content under z's %s id: %d bytes, %v; want a corruption error", kind, len(data), err)
		}
	}
}

// TestBackupWithOlderIDs: a version 2 backup (BLAKE2b chunk ids, its
// manifest piece too) reads and restores; a backup on top of it reuses its
// unchanged file's chunks and cuts a changed one anew, and both read back.
func TestBackupWithOlderIDs(t *testing.T) {
	ctx := context.Background()
	r := New(newMem(), testKey(t, 6), nil)
	content := randomBytes(3, 3<<20)
	var refs []ChunkRef
	for off := 0; off < len(content); off += 1 << 20 {
		part := content[off:min(off+1<<20, len(content))]
		ref, _, err := r.putChunk(ctx, r.oldChunkIDOf(part), part)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	entries := []Entry{
		{Path: "a", Type: TypeFile, Mode: 0o644, Size: int64(len(content)), Chunks: refs, Mtime: 1},
		{Path: "b", Type: TypeFile, Mode: 0o644, Size: int64(len(content)), Chunks: refs, Mtime: 1},
	}
	var piece []byte
	for i := range entries {
		piece = appendRecord(piece, appendEntry(nil, &entries[i], entries[i].Chunks))
	}
	pieceRef, _, err := r.putChunk(ctx, r.oldChunkIDOf(piece), piece)
	if err != nil {
		t.Fatal(err)
	}
	putRawManifest(t, r, "v2", blake2bVersion, nil, int64(len(entries)), func(rt *root) {
		rt.Pieces = []ChunkRef{pieceRef}
		rt.Summary.Files, rt.Summary.Bytes = 2, 2*int64(len(content))
	})
	old := readAll(t, r, "v2")
	if len(old) != 2 || !bytes.Equal(contentOf(t, r, old[0]), content) {
		t.Fatalf("version 2 backup: %d entries, or content differs", len(old))
	}

	w, err := r.NewWriter(ctx, "v3", Metadata{Previous: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Reuse(ctx, Entry{Path: "a", Mode: 0o644, Mtime: 1}, old[0]); err != nil {
		t.Fatal(err)
	}
	changed := bytes.Clone(content)
	changed[len(changed)-1]++
	got, size, err := w.StoreChanged(ctx, bytes.NewReader(changed), int64(len(changed)), old[1].Chunks)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, Entry{Path: "b", Type: TypeFile, Mode: 0o644, Mtime: 2, Size: size, Chunks: got}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	now := readAll(t, r, "v3")
	if len(now) != 2 || !bytes.Equal(contentOf(t, r, now[0]), content) || !bytes.Equal(contentOf(t, r, now[1]), changed) {
		t.Fatal("the backup on top of version 2 does not read back")
	}
	if now[0].Chunks[0] != refs[0] {
		t.Errorf("the unchanged file's chunks were not reused: %v", now[0].Chunks)
	}
}
