package backuprepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
)

// gatedStore holds every chunk Put until release is closed (or the Put's
// context is done), and counts chunk Puts and Stats.
type gatedStore struct {
	blob.Store
	release     chan struct{}
	puts, stats atomic.Int64
}

func (s *gatedStore) Stat(ctx context.Context, key string) (blob.Info, error) {
	if strings.HasPrefix(key, "chunks/") {
		s.stats.Add(1)
	}
	return s.Store.Stat(ctx, key)
}

func (s *gatedStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasPrefix(key, ChunksPrefix) || strings.HasPrefix(key, PacksPrefix) {
		s.puts.Add(1)
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.Put(ctx, key, r, size)
}

// TestUploadErrorAmongManySmallFilesCommitsNothing: the store refuses one
// chunk in the middle of many small files stored concurrently. The error
// surfaces (from a later AddFile or from Commit), and no manifest exists:
// the backup is not there rather than naming a missing chunk.
func TestUploadErrorAmongManySmallFilesCommitsNothing(t *testing.T) {
	ctx := context.Background()
	base := newMem()
	store := &recordingStore{Store: base, failPref: "chunks/", failAt: 40}
	r := unpacked(store, testKey(t, 1))
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	const files = 4 * maxUploads * 10
	var addErr error
	for i := range files {
		e := Entry{Path: fmt.Sprintf("f%04d", i), Mode: 0o644}
		if addErr = w.AddFile(ctx, e, strings.NewReader(fmt.Sprintf("content of file %d", i))); addErr != nil {
			break
		}
	}
	_, commitErr := w.Commit(ctx)
	if commitErr == nil {
		t.Fatal("Commit succeeded although a chunk was not stored")
	}
	for _, err := range []error{addErr, commitErr} {
		if err != nil && !blob.IsNotFound(err) {
			t.Errorf("error %v does not carry the store's refusal", err)
		}
	}
	if got := keys(t, base, "manifests/"); len(got) != 0 {
		t.Errorf("manifest objects %v exist after a failed upload", got)
	}
	if _, err := r.OpenManifest(ctx, "b"); !blob.IsNotFound(err) {
		t.Errorf("OpenManifest after a failed backup: %v, want not found", err)
	}
}

// TestConcurrentDuplicateChunkStoredOnce: the same content queued twice
// while its first upload is still in flight is asked about and stored
// once, and counted once as new and once as reused.
func TestConcurrentDuplicateChunkStoredOnce(t *testing.T) {
	ctx := context.Background()
	store := &gatedStore{Store: newMem(), release: make(chan struct{})}
	r := unpacked(store, testKey(t, 1))
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(5, MinChunkSize/2) // one chunk
	refs1, _, err := w.StoreContent(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// The first upload cannot finish before release is closed.
	refs2, _, err := w.StoreContent(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	close(store.release)
	for i, refs := range [][]ChunkRef{refs1, refs2} {
		if err := w.Add(ctx, Entry{Path: fmt.Sprintf("f%d", i), Type: TypeFile, Mode: 0o644, Chunks: refs, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs1) != 1 || refs1[0] != refs2[0] {
		t.Fatalf("chunk lists %v and %v, want one identical chunk", refs1, refs2)
	}
	// One Put of a content chunk, plus the manifest piece (also a chunk).
	if got := len(keys(t, store.Store, "chunks/")); store.puts.Load() != int64(got) || got != 2 {
		t.Errorf("%d chunk Puts, %d chunk objects: want one per distinct chunk (2)", store.puts.Load(), got)
	}
	if sum.ChunksNew != 1 || sum.ChunksReused != 1 || sum.BytesNew != int64(len(data)) || sum.BytesReused != int64(len(data)) {
		t.Errorf("summary %+v: want the chunk counted once new, once reused", sum)
	}
	for _, e := range readAll(t, r, "b") {
		if !bytes.Equal(contentOf(t, r, e), data) {
			t.Errorf("%s restored wrong", e.Path)
		}
	}
}

// TestCancelWithUploadsInFlightCommitsNothing: a backup cancelled while
// chunks are in flight stops them, and Commit fails without writing a
// manifest.
func TestCancelWithUploadsInFlightCommitsNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := newMem()
	store := &gatedStore{Store: base, release: make(chan struct{})} // never released
	r := New(store, testKey(t, 1), nil)
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile(ctx, Entry{Path: "f", Mode: 0o644}, bytes.NewReader(randomBytes(6, 3*AvgChunkSize))); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Commit(context.Background()); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit after cancel: %v, want canceled", err)
	}
	if got := keys(t, base, ""); len(got) != 0 {
		t.Errorf("objects %v stored by a cancelled backup", got)
	}
}

// syncOrderStore records, in order, each Put (its key) and each Sync
// ("sync") made to a store that batches durability.
type syncOrderStore struct {
	blob.Store
	mu  sync.Mutex
	ops []string
}

func (s *syncOrderStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := s.Store.Put(ctx, key, r, size); err != nil {
		return err
	}
	s.mu.Lock()
	s.ops = append(s.ops, key)
	s.mu.Unlock()
	return nil
}

func (s *syncOrderStore) Sync(ctx context.Context) error {
	s.mu.Lock()
	s.ops = append(s.ops, "sync")
	s.mu.Unlock()
	return nil
}

// TestManifestSyncedAfterChunks: on a store whose Puts are durable only
// at Sync, every chunk and manifest piece is Put before a Sync that comes
// before the manifest root's Put, and the root is synced too: a crash
// never leaves a manifest naming a chunk that is not durable.
func TestManifestSyncedAfterChunks(t *testing.T) {
	ctx := context.Background()
	store := &syncOrderStore{Store: newMem()}
	r := New(store, testKey(t, 1), nil)
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 * maxUploads {
		if err := w.AddFile(ctx, Entry{Path: fmt.Sprintf("f%03d", i), Mode: 0o644}, bytes.NewReader(randomBytes(uint64(100+i), 4096))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ops := store.ops
	root := slices.Index(ops, "manifests/b")
	if root < 0 {
		t.Fatalf("operations %v: no manifest root", ops)
	}
	lastChunk := -1
	for i, op := range ops {
		if strings.HasPrefix(op, PacksPrefix) || strings.HasPrefix(op, IndexPrefix) {
			lastChunk = i
		}
	}
	if lastChunk < 0 || lastChunk > root {
		t.Fatalf("operations %v: chunks missing or put after the manifest root", ops)
	}
	if !slices.Contains(ops[lastChunk:root], "sync") {
		t.Errorf("operations %v: no Sync between the last chunk and the manifest root", ops)
	}
	if !slices.Contains(ops[root:], "sync") {
		t.Errorf("operations %v: the manifest root is not synced", ops)
	}
}

// TestTruncatedChunkStoredAgain: a chunk object shorter than any sealed
// object (the empty file a crash before a batched store's Sync can leave)
// is not reused: the next backup stores the chunk again and restores.
func TestTruncatedChunkStoredAgain(t *testing.T) {
	ctx := context.Background()
	store := newMem()
	r := New(store, testKey(t, 1), nil)
	data := randomBytes(7, 4096)
	id := r.ChunkIDOf(data)
	if err := store.Put(ctx, id.key(), bytes.NewReader(nil), 0); err != nil {
		t.Fatal(err)
	}
	w, err := r.NewWriter(ctx, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile(ctx, Entry{Path: "f", Mode: 0o644}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sum, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.ChunksNew != 1 {
		t.Errorf("summary %+v: the truncated chunk was not stored again", sum)
	}
	for _, e := range readAll(t, r, "b") {
		if !bytes.Equal(contentOf(t, r, e), data) {
			t.Errorf("%s restored wrong", e.Path)
		}
	}
}

// TestUnflushedChunkStoredAgain: a host crash before a batched store's
// Sync can leave a chunk object of its full size whose content never
// reached the disk (zeros here); no manifest names it, and the next backup
// of the same content (after the reboot: the store holds a crash marker of
// this machine's earlier boot) must not reuse it: the chunks written since
// the marker are checked, this one is deleted and stored again, so the
// manifest restores. A chunk of another key written meanwhile is not this
// key's to judge and stays; the marker is cleared.
func TestUnflushedChunkStoredAgain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := testKey(t, 1)
	store := batchedStore(t, dir, key)
	r := New(store, key, nil)
	if _, err := r.NewWriter(ctx, "first", Metadata{}); err != nil { // the store's epoch begins
		t.Fatal(err)
	}
	data := randomBytes(8, 300<<10)
	damaged := putDamaged(t, r, data)
	// Another organization's chunk, also written since the marker.
	other := New(store, testKey(t, 2), nil)
	otherRef, _, err := other.PutChunk(ctx, randomBytes(9, 1000))
	if err != nil {
		t.Fatal(err)
	}
	marker := plantCrashMarker(t, dir, key.ID(), thisMachine(t))

	r = New(store, key, nil) // the backup child after the reboot
	if sum := backupOf(t, r, "b", data); sum.ChunksNew != 1 {
		t.Errorf("summary %+v: the unflushed chunk %s was reused, not stored again", sum, damaged)
	}
	if _, err := other.GetChunk(ctx, otherRef); err != nil {
		t.Errorf("another key's chunk after the check: %v", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("crash marker %s after the check: %v", marker, err)
	}
}

// A chunk damaged under a cove that kept no crash markers (review
// REV-S9-3: written before the store's epoch) is verified before it is
// reused, marker or not, and stored again.
func TestChunkBeforeEpochVerified(t *testing.T) {
	dir := t.TempDir()
	key := testKey(t, 1)
	store := batchedStore(t, dir, key)
	r := New(store, key, nil)
	data := randomBytes(8, 300<<10)
	damaged := putDamaged(t, r, data)
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, damaged), old, old); err != nil {
		t.Fatal(err)
	}
	if sum := backupOf(t, r, "b", data); sum.ChunksNew != 1 {
		t.Errorf("summary %+v: a chunk older than the epoch was reused unread", sum)
	}
}

// A store another machine writes to (review REV-S9-1: a shared file
// system): its marker may be a backup in progress or a crash, so here
// every chunk reused is verified, and a damaged one stored again.
func TestForeignMarkerVerifiesEachChunk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := testKey(t, 1)
	store := batchedStore(t, dir, key)
	if _, err := New(store, key, nil).NewWriter(ctx, "first", Metadata{}); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(8, 300<<10)
	putDamaged(t, New(store, key, nil), data)
	marker := plantCrashMarker(t, dir, key.ID(), "0123456789abcdef0123456789abcdef")
	if sum := backupOf(t, New(store, key, nil), "b", data); sum.ChunksNew != 1 {
		t.Errorf("summary %+v: a damaged chunk was reused while another machine writes", sum)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the other machine's marker: %v, want it kept", err)
	}
}

// batchedStore opens the directory store at dir as the runner's backup
// child opens it for key.
func batchedStore(t *testing.T, dir string, key *Key) *localblob.Store {
	t.Helper()
	s, err := localblob.New(dir, nil, localblob.BatchedSync(key.ID()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// putDamaged stores under data's chunk id an object as a crash leaves it:
// its size, not its bytes. It returns the object's key.
func putDamaged(t *testing.T, r *Repo, data []byte) string {
	t.Helper()
	id := r.ChunkIDOf(data)
	sealed, err := r.key.seal(kindChunk, id.String(), data)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.store.Put(context.Background(), id.key(), bytes.NewReader(make([]byte, len(sealed))), int64(len(sealed))); err != nil {
		t.Fatal(err)
	}
	return id.key()
}

// backupOf commits a backup of one file holding data and checks it
// restores.
func backupOf(t *testing.T, r *Repo, name string, data []byte) Summary {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, name, Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile(ctx, Entry{Path: "f", Mode: 0o644}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sum, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range readAll(t, r, name) {
		if !bytes.Equal(contentOf(t, r, e), data) {
			t.Errorf("%s restored wrong", e.Path)
		}
	}
	return sum
}

// thisMachine is the machine id localblob names markers after.
func thisMachine(t *testing.T) string {
	t.Helper()
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(f); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.ToLower(string(bytes.TrimSpace(b)))
		}
	}
	t.Skip("no machine id (/etc/machine-id): directory stores verify every chunk they reuse here")
	return ""
}

// plantCrashMarker leaves in the store at dir what a boot of machine that
// ended with unsynced objects of scope leaves (localblob's crash marker of
// another boot), and returns its path. It checks that the store sees it.
func plantCrashMarker(t *testing.T, dir, scope, machine string) string {
	t.Helper()
	marker := filepath.Join(dir, ".unsynced", scope+"."+machine+".00000000-0000-4000-8000-000000000000.1-test")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(marker, old, old); err != nil {
		t.Fatal(err)
	}
	s, err := localblob.New(dir, nil, localblob.BatchedSync(scope))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, err := s.CrashedWrites(); err != nil || len(st.Markers)+map[bool]int{true: 1}[st.Foreign] != 1 {
		t.Fatalf("the store reports %+v, %v; want the planted marker", st, err)
	}
	return marker
}

// getCountingStore counts the objects read from a directory store (and
// keeps its crash markers' methods).
type getCountingStore struct {
	*localblob.Store
	gets atomic.Int32
}

func (s *getCountingStore) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, key, rng)
}

// TestStoredChunkTrustedWithoutCrash: with no crash marker of another
// boot, a chunk the directory store holds is reused without being read
// back (no host crash can have damaged it); with one, the chunks written
// since are read once, before the first backup, and not at each reuse.
func TestStoredChunkTrustedWithoutCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := testKey(t, 1)
	ls, err := localblob.New(dir, nil, localblob.BatchedSync(key.ID()))
	if err != nil {
		t.Fatal(err)
	}
	store := &getCountingStore{Store: ls}
	var files [][]byte
	for i := range 4 {
		files = append(files, randomBytes(uint64(20+i), 200<<10))
	}
	backup := func(name string) Summary {
		t.Helper()
		r := unpacked(store, key)
		w, err := r.NewWriter(ctx, name, Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		for i, data := range files {
			if err := w.AddFile(ctx, Entry{Path: fmt.Sprint("f", i), Mode: 0o644}, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
		}
		sum, err := w.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	backup("first")
	store.gets.Store(0)
	if sum := backup("again"); sum.ChunksReused != int64(len(files)) || sum.ChunksNew != 0 {
		t.Fatalf("second backup %+v: want every chunk reused", sum)
	}
	if n := store.gets.Load(); n != 0 {
		t.Errorf("%d objects read to reuse chunks with no crash marker; want none", n)
	}
	plantCrashMarker(t, dir, key.ID(), thisMachine(t))
	var stored int32
	for _, err := range store.List(ctx, ChunksPrefix) {
		if err != nil {
			t.Fatal(err)
		}
		stored++
	}
	store.gets.Store(0)
	if sum := backup("after-crash"); sum.ChunksReused != int64(len(files)) {
		t.Fatalf("backup after the crash %+v: want every (undamaged) chunk reused", sum)
	}
	if n := store.gets.Load(); n != stored {
		t.Errorf("%d objects read after a crash marker; want each of the %d stored chunks once", n, stored)
	}
}

// storesBeforeQuarantine is a directory store on which another backup
// stores a chunk's good copy just as the crash check sets the damaged one
// aside: between its read and its deletion.
type storesBeforeQuarantine struct {
	*localblob.Store
	key  string
	good []byte
}

func (s *storesBeforeQuarantine) Quarantine(ctx context.Context, key string) (blob.Quarantined, error) {
	if key == s.key && s.good != nil {
		if err := s.Store.Put(ctx, key, bytes.NewReader(s.good), int64(len(s.good))); err != nil {
			return nil, err
		}
		s.good = nil
	}
	return s.Store.Quarantine(ctx, key)
}

// The crash check found a chunk damaged; before it deletes it, another
// backup stores the chunk again, whole (review REV-S9-4). The check
// deletes what it found damaged, never the good copy: the chunk reads
// back.
func TestCrashCheckKeepsChunkStoredMeanwhile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := testKey(t, 1)
	ls := batchedStore(t, dir, key)
	r := New(ls, key, nil)
	if _, err := r.NewWriter(ctx, "first", Metadata{}); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(8, 300<<10)
	damaged := putDamaged(t, r, data)
	id := r.ChunkIDOf(data)
	good, err := r.key.seal(kindChunk, id.String(), data)
	if err != nil {
		t.Fatal(err)
	}
	plantCrashMarker(t, dir, key.ID(), thisMachine(t))
	store := &storesBeforeQuarantine{Store: ls, key: damaged, good: good}
	r = New(store, key, nil)
	if _, err := r.NewWriter(ctx, "after", Metadata{}); err != nil { // runs the check
		t.Fatal(err)
	}
	if store.good != nil {
		t.Fatal("the check never set the damaged chunk aside")
	}
	if got, err := r.GetChunk(ctx, ChunkRef{ID: id, Size: uint32(len(data))}); err != nil || !bytes.Equal(got, data) {
		t.Errorf("the chunk stored meanwhile: %v; want it kept", err)
	}
}

// TestFlushCancelledCommitsNothing: an entry whose Add failed while
// flushing a manifest piece (its context ended while every upload slot was
// busy) leaves the writer unable to commit: a later Commit fails and no
// manifest exists, rather than one naming a piece never stored or holding
// the failed entry (review S12-2).
func TestFlushCancelledCommitsNothing(t *testing.T) {
	bg := context.Background()
	r := New(newMem(), testKey(t, 3), nil)
	w, err := r.NewWriter(bg, "b", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("d%08d-%s", i, strings.Repeat("x", 200)) }
	i := 0
	for ; len(w.piece) < pieceTarget-4096; i++ {
		if err := w.Add(bg, Entry{Path: name(i), Type: TypeDir, Mode: 0o755, Mtime: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for range maxUploads { // every upload slot busy
		w.up.slots <- struct{}{}
	}
	cancelled, cancel := context.WithCancel(bg)
	cancel()
	refused := false
	for ; !refused; i++ {
		err := w.Add(cancelled, Entry{Path: name(i), Type: TypeDir, Mode: 0o755, Mtime: 1})
		refused = err != nil
	}
	for range maxUploads {
		<-w.up.slots
	}
	if _, err := w.Commit(bg); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit after a failed Add: %v, want the failure", err)
	}
	if _, err := r.OpenManifest(bg, "b"); !blob.IsNotFound(err) {
		t.Errorf("manifest after a failed Add: %v, want none", err)
	}
}
