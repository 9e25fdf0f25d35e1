package backuprepo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
)

// packedRepo returns a repository storing packs on a directory store.
func packedRepo(t *testing.T) (*Repo, blob.Store, string) {
	t.Helper()
	s, dir := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	r.SetPacks(true)
	return r, s, dir
}

// statStore counts the Stats of chunk objects.
type statStore struct {
	blob.Store
	stats atomic.Int64
}

func (s *statStore) Stat(ctx context.Context, key string) (blob.Info, error) {
	if strings.HasPrefix(key, ChunksPrefix) {
		s.stats.Add(1)
	}
	return s.Store.Stat(ctx, key)
}

// manySmall returns n small files, each of its own content.
func manySmall(n int) []item {
	items := []item{{e: Entry{Path: ".", Type: TypeDir, Mode: 0o755}}}
	for i := range n {
		c := randomBytes(uint64(100+i), 100+i*37%4000)
		items = append(items, item{Entry{Path: "f" + string(rune('a'+i/26)) + string(rune('a'+i%26)), Type: TypeFile, Mode: 0o644,
			Mtime: 1e18, Ctime: 2e18, Inode: uint64(10 + i), Size: int64(len(c))}, c})
	}
	return items
}

// TestPackedRoundTrip: a writer storing packs stores the tree's chunks and
// its manifest pieces in a few packs and their indexes, no object per
// chunk; a repository opened afresh (its index read from the store) reads
// it all back and checks it complete, shallow and deep.
func TestPackedRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, s, _ := packedRepo(t)
	items := append(tree(), manySmall(300)[1:]...)
	items = append(items[:1], sortedItems(items[1:])...)
	sum := backup(t, r, "b", items, "")
	if own := keys(t, s, ChunksPrefix); len(own) != 0 {
		t.Errorf("%d chunk objects of their own stored by a packing writer", len(own))
	}
	packs, index := keys(t, s, PacksPrefix), keys(t, s, IndexPrefix)
	if len(packs) == 0 || len(packs) != len(index) || len(packs) > 3 {
		t.Errorf("%d packs and %d indexes for %d chunks: want a few, one index each", len(packs), len(index), sum.ChunksNew)
	}
	m, err := r.OpenManifest(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if m.root.Version != packedVersion {
		t.Errorf("manifest version %d, want %d", m.root.Version, packedVersion)
	}

	fresh := New(s, testKey(t, 1), nil)
	checkRestore(t, fresh, "b", items)
	for _, deep := range []bool{false, true} {
		rep, err := New(s, testKey(t, 1), nil).Check(ctx, "b", deep)
		if err != nil || !rep.Complete {
			t.Errorf("check (deep %v): %+v, %v", deep, rep, err)
		}
	}
}

// sortedItems sorts items by path in walk order.
func sortedItems(items []item) []item {
	out := append([]item(nil), items...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && comparePaths(out[j-1].e.Path, out[j].e.Path) > 0; j-- {
			out[j-1], out[j] = out[j], out[j-1]
		}
	}
	return out
}

// TestPackedDedup: another environment's backup of the same content, by
// another repository instance, stores nothing and asks the store about
// no chunk (the index answers); chunks stored as objects of their own
// before packs are reused too, not stored again in a pack.
func TestPackedDedup(t *testing.T) {
	s, _ := newLocal(t)
	items := tree()
	old := unpacked(s, testKey(t, 1)) // objects of their own
	backup(t, old, "env-a/b1", items[:4], "")
	ownBefore := keys(t, s, ChunksPrefix)

	cs := &statStore{Store: s}
	r := New(cs, testKey(t, 1), nil)
	r.SetPacks(true)
	first := backup(t, r, "env-a/b2", items, "")
	if first.BytesNew != distinctBytes(items)-distinctBytes(items[:4]) {
		t.Errorf("first packed backup: %d bytes new, want only what the unpacked one did not store (%d)", first.BytesNew, distinctBytes(items)-distinctBytes(items[:4]))
	}
	if own := keys(t, s, ChunksPrefix); len(own) != len(ownBefore) {
		t.Errorf("%d chunk objects of their own after a packing writer, %d before", len(own), len(ownBefore))
	}
	packs := keys(t, s, PacksPrefix)

	r2 := New(cs, testKey(t, 1), nil)
	r2.SetPacks(true)
	cs.stats.Store(0)
	other := backup(t, r2, "env-b/b1", items[4:], "")
	if other.BytesNew != 0 || other.ChunksNew != 0 {
		t.Errorf("second environment: %d bytes (%d chunks) new; want nothing new", other.BytesNew, other.ChunksNew)
	}
	// Asked about: src/main.go.copy's content (.bashrc's, an object of
	// its own) and the new manifest piece; not the chunks in packs.
	if n := cs.stats.Load(); n != 2 {
		t.Errorf("%d chunks asked about in the store, want 2: the index lists the others", n)
	}
	if got := keys(t, s, PacksPrefix); len(got) != len(packs)+1 { // its manifest piece
		t.Errorf("%d packs after the second environment, %d before: want one more (its manifest piece)", len(got), len(packs))
	}
	checkRestore(t, New(s, testKey(t, 1), nil), "env-a/b2", items)
	checkRestore(t, New(s, testKey(t, 1), nil), "env-b/b1", items[4:])
}

// TestPackIndexTampered: an index that does not authenticate (moved to
// another pack's name, or not written with the key) is left out: the
// chunks it lists are reported missing, naming them, and a writer stores
// them again. A pack with a byte changed, or cut short, fails the chunk
// it holds there as corrupt.
func TestPackIndexTampered(t *testing.T) {
	ctx := context.Background()
	r, s, dir := packedRepo(t)
	items := tree()
	backup(t, r, "b", items, "")
	index := keys(t, s, IndexPrefix)
	if len(index) != 1 {
		t.Fatalf("%d indexes, want 1", len(index))
	}
	_, p, _ := ParseIndexKey(index[0])
	// Moved under another name: authentication binds it to its pack.
	other := PackID{1}
	if err := os.Rename(filepath.Join(dir, index[0]), filepath.Join(dir, r.IndexKey(other))); err != nil {
		t.Fatal(err)
	}
	fresh := New(s, testKey(t, 1), nil)
	m, err := fresh.OpenManifest(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Next(); err == nil || !blob.IsNotFound(err) {
		t.Errorf("manifest whose pieces' index does not check out: %v, want not found", err)
	}
	if err := os.Rename(filepath.Join(dir, r.IndexKey(other)), filepath.Join(dir, index[0])); err != nil {
		t.Fatal(err)
	}

	// A byte changed in the pack: the chunk there is corrupt.
	pf := filepath.Join(dir, r.PackKey(p))
	b, err := os.ReadFile(pf)
	if err != nil {
		t.Fatal(err)
	}
	e := fileEntry(t, New(s, testKey(t, 1), nil), "b", "src/main.go")
	l, ok := func() (Location, bool) {
		fr := New(s, testKey(t, 1), nil)
		if err := fr.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		return fr.Locate(e.Chunks[0].ID)
	}()
	if !ok {
		t.Fatal("chunk of src/main.go not in the index")
	}
	changed := bytes.Clone(b)
	changed[l.Offset+l.Length-1] ^= 1
	if err := os.WriteFile(pf, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	fresh = New(s, testKey(t, 1), nil)
	if _, err := fresh.GetChunk(ctx, e.Chunks[0]); !IsCorrupt(err) {
		t.Errorf("chunk with a byte changed in its pack: %v, want corrupt", err)
	}
	rep, err := fresh.Check(ctx, "b", true)
	if err != nil || rep.Complete || len(rep.Problems) != 1 || rep.Problems[0].Paths[0] != "src/main.go" {
		t.Errorf("deep check of a changed pack: %+v, %v; want src/main.go damaged", rep, err)
	}
	// Cut short before the chunk's end: corrupt, not a short read.
	if err := os.WriteFile(pf, b[:l.Offset+l.Length-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(s, testKey(t, 1), nil).GetChunk(ctx, e.Chunks[0]); !IsCorrupt(err) {
		t.Errorf("chunk past its pack's end: %v, want corrupt", err)
	}
	// (The manifest's piece, last in the pack, is cut off too.)
	if _, err = New(s, testKey(t, 1), nil).Check(ctx, "b", false); !IsCorrupt(err) {
		t.Errorf("shallow check of a pack cut short: %v; want corrupt", err)
	}
}

// TestIndexRefusedWhenMalformed: indexes that authenticate but list
// entries no pack can hold are refused as corrupt.
func TestIndexRefusedWhenMalformed(t *testing.T) {
	id := ChunkID{7}
	for _, tc := range []struct {
		name    string
		entries []PackEntry
	}{
		{"too short", []PackEntry{{ID: id, Offset: 0, Length: uint32(minSealed - 1)}}},
		{"too long", []PackEntry{{ID: id, Offset: 0, Length: uint32(maxSealed + 1)}}},
		{"overlapping", []PackEntry{{ID: id, Offset: 0, Length: 100}, {ID: id, Offset: 99, Length: 100}}},
		{"past the end", []PackEntry{{ID: id, Offset: uint32(maxPackSize - 99), Length: 100}}},
	} {
		if _, err := decodeIndex("index/x", encodeIndex(tc.entries)); !IsCorrupt(err) {
			t.Errorf("%s: %v, want corrupt", tc.name, err)
		}
	}
	for _, b := range [][]byte{nil, make([]byte, indexEntryLen-1), make([]byte, indexEntryLen+1)} {
		if _, err := decodeIndex("index/x", b); !IsCorrupt(err) {
			t.Errorf("%d bytes: %v, want corrupt", len(b), err)
		}
	}
}

// TestPackMovedFoundAgain: a repository that read the index before its
// chunks' pack was replaced by another holding them (garbage collection
// repacking) finds them in the new pack.
func TestPackMovedFoundAgain(t *testing.T) {
	ctx := context.Background()
	r, s, _ := packedRepo(t)
	items := tree()
	backup(t, r, "b", items, "")
	reader := New(s, testKey(t, 1), nil)
	if err := reader.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	old := keys(t, s, IndexPrefix)[0]
	_, p, _ := ParseIndexKey(old)
	entries, err := r.ReadIndex(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	data := func() []byte {
		rc, err := s.Get(ctx, r.PackKey(p), blob.Range{})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		return buf.Bytes()
	}()
	moved := PackID{9}
	if _, err := r.putPack(ctx, moved, data, entries); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{r.IndexKey(p), r.PackKey(p)} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	checkRestore(t, reader, "b", items)
	if l, ok := reader.Locate(entries[0].ID); !ok || l.Pack != moved {
		t.Errorf("chunk at %+v (%v), want in the new pack", l, ok)
	}
}

// TestPackedCancelCommitsNothing: a packing writer cancelled with chunks
// waiting in its pack commits nothing and stores no manifest.
func TestPackedCancelCommitsNothing(t *testing.T) {
	r, s, _ := packedRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	refs, size, err := w.StoreContent(ctx, bytes.NewReader(randomBytes(3, 10000)))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, Entry{Path: "f", Type: TypeFile, Mode: 0o644, Chunks: refs, Size: size}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Commit(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("commit after cancel: %v, want canceled", err)
	}
	if m := keys(t, s, ManifestsPrefix); len(m) != 0 {
		t.Errorf("manifests %v after a cancelled backup", m)
	}
}

// TestPackUploadFailsCommitsNothing: a pack that cannot be stored fails
// the backup.
func TestPackUploadFailsCommitsNothing(t *testing.T) {
	s, _ := newLocal(t)
	rs := &recordingStore{Store: s, failPref: PacksPrefix, failAt: 1}
	r := New(rs, testKey(t, 1), nil)
	r.SetPacks(true)
	ctx := context.Background()
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile(ctx, Entry{Path: "f", Mode: 0o644}, bytes.NewReader([]byte("content"))); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err == nil || !strings.Contains(err.Error(), "store pack") {
		t.Errorf("commit with its pack refused: %v", err)
	}
	if m := keys(t, s, ManifestsPrefix); len(m) != 0 {
		t.Errorf("manifests %v after a failed backup", m)
	}
}

// packBeforeCrash stores content in a pack on a batched directory store,
// without committing: what a host crash can find half on disk. It returns
// the store's directory, the store, the content and the pack's file.
func packBeforeCrash(t *testing.T, key *Key) (string, blob.Store, []byte, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store := batchedStore(t, dir, key)
	w, err := New(store, key, nil).NewWriter(ctx, "first", Metadata{}) // the store's epoch begins
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(8, 300<<10)
	if _, _, err := w.StoreContent(ctx, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	settle(t, w) // stored, not committed
	packs := keys(t, store, PacksPrefix)
	if len(packs) != 1 {
		t.Fatalf("packs %v, want one", packs)
	}
	return dir, store, data, filepath.Join(dir, packs[0])
}

// TestUnflushedPackStoredAgain: a host crash before a batched store's
// Sync can leave a pack whose content never reached the disk (zeros
// here) under an index that did. After the reboot (a crash marker of this
// machine's earlier boot) the packs written since the marker are checked:
// this one is deleted with its index, and the next backup of the same
// content stores it again instead of reusing it.
func TestUnflushedPackStoredAgain(t *testing.T) {
	key := testKey(t, 1)
	dir, store, data, pf := packBeforeCrash(t, key)
	fi, err := os.Stat(pf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pf, make([]byte, fi.Size()), 0o600); err != nil {
		t.Fatal(err)
	}
	plantCrashMarker(t, dir, key.ID(), thisMachine(t))

	r := New(store, key, nil) // the backup child after the reboot
	if sum := backupOf(t, r, "b", data); sum.ChunksNew != 1 {
		t.Errorf("summary %+v: the chunk of the unflushed pack was reused, not stored again", sum)
	}
	if _, err := os.Stat(pf); !os.IsNotExist(err) || len(keys(t, store, IndexPrefix)) != 1 {
		t.Errorf("the damaged pack %s is still stored (%v), or its index", pf, err)
	}
}

// A host crash can persist a pack's index but not the pack (unsynced
// files reach the disk in no particular order): the crash check deletes
// the index, and the next backup stores the content again rather than
// reuse a chunk stored nowhere (review S13-1).
func TestCrashLeavesIndexWithoutPack(t *testing.T) {
	key := testKey(t, 1)
	dir, store, data, pf := packBeforeCrash(t, key)
	if err := os.Remove(pf); err != nil { // lost in the crash
		t.Fatal(err)
	}
	plantCrashMarker(t, dir, key.ID(), thisMachine(t))
	sum := backupOf(t, New(store, key, nil), "b", data)
	rep, err := New(store, key, nil).Check(context.Background(), "b", false)
	if err != nil || !rep.Complete || sum.ChunksNew != 1 {
		t.Errorf("backup b (%d chunks new) committed damaged: %+v, %v", sum.ChunksNew, rep, err)
	}
}

// packGets counts the reads of packs from a directory store (keeping its
// crash markers' methods).
type packGets struct {
	*localblob.Store
	gets atomic.Int32
}

func (s *packGets) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	if strings.HasPrefix(key, PacksPrefix) {
		s.gets.Add(1)
	}
	return s.Store.Get(ctx, key, rng)
}

// TestPackedChunkTrustedWithoutCrash: with no crash marker of another
// boot, chunks in packs are reused without reading a pack; with one, each
// pack written since is read once, by the check before the first backup.
func TestPackedChunkTrustedWithoutCrash(t *testing.T) {
	dir := t.TempDir()
	key := testKey(t, 1)
	ls, err := localblob.New(dir, nil, localblob.BatchedSync(key.ID()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.Close() })
	store := &packGets{Store: ls}
	data := randomBytes(21, 3*packTarget/2) // two packs
	backupOf(t, New(store, key, nil), "first", data)
	packs := int32(len(keys(t, store, PacksPrefix)))
	if packs < 2 {
		t.Fatalf("%d packs, want two or more", packs)
	}
	store.gets.Store(0)
	r := New(store, key, nil)
	w, err := r.NewWriter(context.Background(), "again", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.StoreContent(context.Background(), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	settle(t, w)
	if w.sum.ChunksNew != 0 || store.gets.Load() != 0 {
		t.Errorf("%d chunks new, %d packs read to reuse chunks with no crash marker; want none", w.sum.ChunksNew, store.gets.Load())
	}
	plantCrashMarker(t, dir, key.ID(), thisMachine(t))
	store.gets.Store(0)
	w, err = New(store, key, nil).NewWriter(context.Background(), "after-crash", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.StoreContent(context.Background(), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	settle(t, w)
	if w.sum.ChunksNew != 0 || store.gets.Load() != packs {
		t.Errorf("after a crash marker: %d chunks new, %d pack reads; want none new and each of the %d packs read once", w.sum.ChunksNew, store.gets.Load(), packs)
	}
}
