package backuprepo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob"
)

// durable hides localblob's Syncer: Puts durable on return (S3).
type durable struct{ blob.Store }

// Many tiny distinct chunks fill a pack's index before its bytes: a pack
// holds at most maxPackEntries chunks, so its index fits an object and
// the backup commits (review S13-2).
func TestManyTinyFilesSplitPacks(t *testing.T) {
	ctx := context.Background()
	r, _, _ := packedRepo(t)
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	n := MaxPayload/indexEntryLen + 1000 // 105,857 files of a few bytes
	for i := range n {
		if _, _, err := w.StoreContent(ctx, strings.NewReader(fmt.Sprint(i))); err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Errorf("commit of %d small distinct files: %v", n, err)
	}
}

// blockingList makes the next List of index/ take its snapshot, signal
// listed, and wait for release before yielding it.
type blockingList struct {
	blob.Store
	mu      sync.Mutex
	armed   bool
	listed  chan struct{}
	release chan struct{}
}

func (s *blockingList) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	s.mu.Lock()
	block := s.armed && strings.HasPrefix(prefix, IndexPrefix)
	if block {
		s.armed = false
	}
	s.mu.Unlock()
	if !block {
		return s.Store.List(ctx, prefix)
	}
	type res struct {
		i blob.Info
		e error
	}
	var snap []res
	for i, e := range s.Store.List(ctx, prefix) {
		snap = append(snap, res{i, e})
	}
	close(s.listed)
	<-s.release
	return func(yield func(blob.Info, error) bool) {
		for _, r := range snap {
			if !yield(r.i, r.e) {
				return
			}
		}
	}
}

// A chunk of a backup committed while a listing was under way (a writer
// starting on the same Repo) is looked for: that listing's end does not
// stand for the refresh the miss asks for, which lists again and finds
// it (review S13-5).
func TestRefreshAfterListingUnderWay(t *testing.T) {
	ctx := context.Background()
	base, _ := newLocal(t)
	bs := &blockingList{Store: durable{base}, listed: make(chan struct{}), release: make(chan struct{})}
	reader := New(bs, testKey(t, 1), nil)

	bs.armed = true
	loaded := make(chan error, 1)
	go func() { loaded <- reader.LoadIndex(ctx) }()
	<-bs.listed

	// Meanwhile another machine commits a backup.
	other := New(durable{base}, testKey(t, 1), nil)
	data := randomBytes(42, 100<<10)
	w, err := other.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	refs, size, err := w.StoreContent(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, Entry{Path: "f", Type: TypeFile, Mode: 0o644, Chunks: refs, Size: size}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	seen := reader.indexSeq() // the miss: while the listing is under way
	close(bs.release)
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if _, ok := reader.Locate(refs[0].ID); ok {
		t.Fatal("the listing under way saw the new pack: the test tests nothing")
	}
	if err := reader.refreshIndex(ctx, seen); err != nil {
		t.Fatal(err)
	}
	if _, ok := reader.Locate(refs[0].ID); !ok {
		t.Error("a chunk of a committed backup not found after the refresh its miss asked for")
	}
	if _, err := reader.GetChunk(ctx, refs[0]); err != nil {
		t.Error(err)
	}
}

// A pack stored by a writer of the same Repo while a LoadIndex lists is
// not forgotten by it: its chunks stay located (review S13-7).
func TestLoadIndexKeepsPackStoredMeanwhile(t *testing.T) {
	ctx := context.Background()
	base, _ := newLocal(t)
	bs := &blockingList{Store: durable{base}, listed: make(chan struct{}), release: make(chan struct{})}
	r := New(bs, testKey(t, 1), nil)
	w, err := r.NewWriter(ctx, "a", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	refs, _, err := w.StoreContent(ctx, bytes.NewReader(randomBytes(7, 50<<10)))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.wait(); err != nil {
		t.Fatal(err)
	}
	bs.armed = true
	loaded := make(chan error, 1)
	go func() { loaded <- r.LoadIndex(ctx) }() // another writer starting
	<-bs.listed
	if err := w.flushPack(ctx); err != nil { // pack stored after the listing
		t.Fatal(err)
	}
	if err := w.wait(); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Locate(refs[0].ID); !ok {
		t.Fatal("not located right after putPack")
	}
	close(bs.release)
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Locate(refs[0].ID); !ok {
		t.Errorf("chunk of a pack stored during LoadIndex forgotten")
	}
}

// An index whose pack is gone (deleted by an attacker, an operator, or a
// sweep that raced a stalled index PUT) is not used: a later writer on a
// store durable on Put stores the content again instead of committing a
// backup naming chunks stored nowhere (review S13-1).
func TestIndexWithoutPackNotTrusted(t *testing.T) {
	ctx := context.Background()
	base, _ := newLocal(t)
	s := durable{base}
	r := New(s, testKey(t, 1), nil)
	data := randomBytes(5, 200<<10)
	backupOf(t, r, "a", data)
	for _, k := range keys(t, s, PacksPrefix) {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	r2 := New(s, testKey(t, 1), nil)
	sum := backupOf(t, r2, "b", data)
	rep, err := New(s, testKey(t, 1), nil).Check(ctx, "b", false)
	if err != nil || !rep.Complete {
		t.Errorf("backup b committed (%d chunks new) but is damaged: %+v, %v", sum.ChunksNew, rep, err)
	}
}

type countGets struct {
	blob.Store
	mu   sync.Mutex
	gets int
}

func (s *countGets) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	if strings.HasPrefix(key, IndexPrefix) {
		s.mu.Lock()
		s.gets++
		s.mu.Unlock()
	}
	return s.Store.Get(ctx, key, rng)
}

// Another organization's indexes are not even listed: they live under its
// key id (review S13-3).
func TestOtherKeysIndexesNotRead(t *testing.T) {
	ctx := context.Background()
	base, _ := newLocal(t)
	other := New(base, testKey(t, 2), nil)
	for i := range 5 {
		backupOf(t, other, fmt.Sprint("o", i), randomBytes(uint64(i), 1000))
	}
	cs := &countGets{Store: base}
	r := New(cs, testKey(t, 1), nil)
	for range 3 {
		if err := r.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if cs.gets != 0 {
		t.Errorf("%d GETs of index objects for 3 LoadIndex of a repository with no pack of its own (5 of another key)", cs.gets)
	}
}

// twoCopies backs up data and copies its pack as a newer one, whose
// content damage then replaces: it returns the chunk's reference and a
// repository that read the index, pointing at the damaged newer copy.
func twoCopies(t *testing.T, data []byte, damage func(dir, pack string, packData []byte)) (ChunkRef, *Repo) {
	t.Helper()
	ctx := context.Background()
	base, dir := newLocal(t)
	s := durable{base}
	r := New(s, testKey(t, 1), nil)
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
	damage(dir, r.PackKey(p2), packData)
	ref := ChunkRef{ID: r.ChunkIDOf(data), Size: uint32(len(data))}
	fresh := New(s, testKey(t, 1), nil)
	if err := fresh.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := fresh.Locate(ref.ID); l.Pack != p2 {
		t.Fatalf("the index points at %s, want the newer copy %s", l.Pack, p2)
	}
	return ref, fresh
}

// A chunk held by two packs, the newer copy damaged (a Foreign store,
// where no crash check runs) or cut short (a crash, a partial restore of
// the bucket): a read falls back to the other copy (review S13-4, S13-13).
func TestDamagedCopyReadElsewhere(t *testing.T) {
	data := randomBytes(11, 100<<10)
	for name, damage := range map[string]func(dir, pack string, packData []byte){
		"flipped": func(dir, pack string, packData []byte) {
			for i := range packData {
				packData[i] ^= 0xff
			}
			if err := os.WriteFile(filepath.Join(dir, pack), packData, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"cut short": func(dir, pack string, packData []byte) {
			if err := os.WriteFile(filepath.Join(dir, pack), packData[:len(packData)/3], 0o600); err != nil {
				t.Fatal(err)
			}
		},
	} {
		ref, fresh := twoCopies(t, data, damage)
		if got, err := fresh.GetChunk(context.Background(), ref); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: chunk with a good older copy: %v", name, err)
		}
	}
}

// A writer with packs off that names chunks of a repository with packs
// writes version 4: a cove that does not read packs refuses the manifest
// rather than find its chunks missing (review S13-6).
func TestUnpackedWriterNamingPackedChunksWritesV4(t *testing.T) {
	ctx := context.Background()
	r, s, _ := packedRepo(t)
	data := randomBytes(9, 100<<10)
	backupOf(t, r, "a", data)
	off := unpacked(s, testKey(t, 1))
	backupOf(t, off, "b", data)
	m, err := off.OpenManifest(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := off.Locate(off.ChunkIDOf(data)); !ok || m.root.Version != packedVersion {
		t.Errorf("manifest version %d (chunk in a pack: %v); want %d, naming a chunk stored only in a pack", m.root.Version, ok, packedVersion)
	}
}
