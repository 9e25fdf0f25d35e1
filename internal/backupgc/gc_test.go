package backupgc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// The collector removes a chunk only once no manifest references it, it
// was written more than the grace ago, it was condemned by a mark and the
// sweep a grace later still finds it unreferenced.
func TestGCRemovesOnlyUnreferencedOld(t *testing.T) { testRemovesOnlyUnreferencedOld(t, newStore(t)) }

func testRemovesOnlyUnreferencedOld(t *testing.T, s blob.Store) {
	ctx := context.Background()
	k, _ := newKey(t)
	repo := unpackedRepo(s, k)
	shared, onlyB := files("s", 1, 2), files("t", 3, 4)
	backup(t, repo, "env1-a", shared...)
	backup(t, repo, "env1-b", append(shared, onlyB...)...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-b"))) // retention removed b
	clk := newClock()
	gc := collector(s, clk, k)

	// Right after: everything is younger than the grace; nothing condemned.
	if st := run(t, gc); st.Condemned != 0 || st.Young == 0 {
		t.Fatalf("young chunks condemned: %+v", st)
	}
	clk.Add(2 * time.Hour)
	st := run(t, gc) // mark
	if st.Swept != 0 || st.Condemned == 0 {
		t.Fatalf("mark: %+v", st)
	}
	for _, f := range onlyB {
		if !exists(t, s, chunkOf(repo, f.seed)) {
			t.Fatal("a mark deleted a chunk")
		}
	}
	// A sweep is not due before the grace has passed since the mark.
	clk.Add(30 * time.Minute)
	if st := run(t, gc); st.Swept != 0 {
		t.Fatalf("swept before the grace: %+v", st)
	}
	clk.Add(time.Hour)
	st = run(t, gc)
	if st.Swept != len(onlyB)+1 || st.SweptBytes <= int64(len(onlyB)*fileSize) { // b's files and its manifest's piece, sealed
		t.Fatalf("sweep: %+v", st)
	}
	for _, f := range onlyB {
		if exists(t, s, chunkOf(repo, f.seed)) {
			t.Errorf("unreferenced chunk of %s kept", f.path)
		}
	}
	for _, f := range shared {
		if !exists(t, s, chunkOf(repo, f.seed)) {
			t.Errorf("chunk of %s, which env1-a needs, deleted", f.path)
		}
	}
	complete(t, repo, "env1-a")
	// Nothing left to collect: another full cycle deletes nothing more.
	before := countKeys(t, s, backuprepo.ChunksPrefix)
	run(t, gc)
	clk.Add(2 * time.Hour)
	run(t, gc)
	if after := countKeys(t, s, backuprepo.ChunksPrefix); after != before {
		t.Fatalf("%d chunks after another cycle, %d before", after, before)
	}
	complete(t, repo, "env1-a")
}

// A backup that reuses a condemned chunk (the writer finds it stored and
// does not upload it) and commits before the sweep keeps it: the sweep
// reads the new manifest.
func TestConcurrentWriterKeepsCondemnedChunk(t *testing.T) { testConcurrentWriterKeeps(t, newStore(t)) }

func testConcurrentWriterKeeps(t *testing.T, s blob.Store) {
	ctx := context.Background()
	k, _ := newKey(t)
	repo := unpackedRepo(s, k)
	old := files("f", 10, 11, 12)
	backup(t, repo, "env1-old", old...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-old")))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Condemned != len(old)+1 { // the files and the manifest's piece
		t.Fatalf("mark: %+v", st)
	}

	// A writer starts after the mark and finds the condemned chunks.
	w := startBackup(t, repo, "env1-new", old...)
	sum, err := w.CommitGCSafe(ctx)
	must(t, err)
	if sum.ChunksReused != int64(len(old)) {
		t.Fatalf("the writer stored %d chunks again, reused %d: the test must reuse condemned chunks", sum.ChunksNew, sum.ChunksReused)
	}
	clk.Add(2 * time.Hour)
	st := run(t, gc)
	if st.Kept < len(old) {
		t.Fatalf("sweep: %+v", st)
	}
	complete(t, repo, "env1-new")
}

// A backup that reuses a condemned chunk and commits after the sweep
// deleted it is refused (CommitGCSafe sees the sweep's marker) and leaves
// no manifest; taken again, it stores the chunk anew and restores whole.
func TestWriterAfterSweepRefused(t *testing.T) { testWriterAfterSweepRefused(t, newStore(t)) }

func testWriterAfterSweepRefused(t *testing.T, s blob.Store) {
	ctx := context.Background()
	k, _ := newKey(t)
	repo := unpackedRepo(s, k)
	old := files("f", 20, 21)
	backup(t, repo, "env1-old", old...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-old")))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	run(t, gc) // mark

	w := startBackup(t, repo, "env1-new", old...) // reuses the condemned chunks
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Swept == 0 {
		t.Fatalf("sweep deleted nothing: %+v", st)
	}
	if exists(t, s, chunkOf(repo, old[0].seed)) {
		t.Fatal("the condemned chunk survived: the test must commit after its deletion")
	}
	_, err := w.CommitGCSafe(ctx)
	if !errors.Is(err, backuprepo.ErrSwept) {
		t.Fatalf("commit after the sweep: %v, want ErrSwept", err)
	}
	if exists(t, s, backuprepo.ManifestKey("env1-new")) {
		t.Fatal("the refused backup's manifest is left, naming deleted chunks")
	}
	// Taken again later: the sweep's marker, which ended before the new
	// writer started, no longer concerns it (deleted here: the storage's
	// clock, which orders them, cannot be moved by the test, and times
	// within 2 s of each other count as overlapping).
	markers, err := repo.SweepMarkers(ctx)
	must(t, err)
	for _, m := range markers {
		if m.End.IsZero() {
			t.Fatalf("marker %s has no end", m.ID)
		}
		must(t, repo.DeleteSweepMarker(ctx, m.ID))
	}
	w = startBackup(t, repo, "env1-new2", old...)
	sum, err := w.CommitGCSafe(ctx)
	must(t, err)
	if sum.ChunksNew < int64(len(old)) {
		t.Fatalf("retry stored %d new chunks, want the %d deleted ones", sum.ChunksNew, len(old))
	}
	complete(t, repo, "env1-new2")
}

// The collector only ever deletes chunks sealed with the key of an
// organization it collects: another organization's chunks, unreferenced
// by this one's manifests, are left, and so are those of an organization
// whose manifests cannot all be read.
func TestOtherOrganizationUntouched(t *testing.T) { testOtherOrganizationUntouched(t, newStore(t)) }

func testOtherOrganizationUntouched(t *testing.T, s blob.Store) {
	ctx := context.Background()
	ka, _ := newKey(t)
	kb, _ := newKey(t)
	a, b := unpackedRepo(s, ka), unpackedRepo(s, kb)
	backup(t, a, "a-live", files("a", 30)...)
	backup(t, a, "a-gone", files("a", 31)...)
	backup(t, b, "b-live", files("b", 40)...)
	backup(t, b, "b-gone", files("b", 41)...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("a-gone")))
	must(t, s.Delete(ctx, backuprepo.ManifestKey("b-gone")))
	bChunks := countKeys(t, s, backuprepo.ChunksPrefix) - 4 // a's: 2 files, 2 pieces

	clk := newClock()
	onlyA := collector(s, clk, ka)
	clk.Add(2 * time.Hour)
	st := run(t, onlyA)
	if st.Foreign == 0 || st.ForeignManifests != 1 {
		t.Fatalf("b's objects not seen as foreign: %+v", st)
	}
	clk.Add(2 * time.Hour)
	run(t, onlyA)
	if exists(t, s, chunkOf(a, 31)) {
		t.Fatal("a's garbage kept")
	}
	if !exists(t, s, chunkOf(b, 41)) || !exists(t, s, chunkOf(b, 40)) {
		t.Fatal("a's collector deleted b's chunks")
	}
	complete(t, b, "b-live")
	complete(t, a, "a-live")

	// Both keys, but one of b's manifests does not authenticate: b's
	// references are unknown, so nothing of b's is condemned.
	forged := bytes.Repeat([]byte{0}, 200)
	copy(forged, "CVB1m")
	hdr := headerOf(t, s, backuprepo.ManifestKey("b-live"))
	copy(forged, hdr)
	blobPut(t, s, backuprepo.ManifestKey("b-broken"), forged)
	both := collector(s, clk, ka, kb)
	clk.Add(2 * time.Hour)
	if _, err := both.Run(ctx); err == nil {
		t.Fatal("a run with an unreadable manifest reports no error")
	}
	clk.Add(2 * time.Hour)
	both.Run(ctx)
	if got := countKeys(t, s, backuprepo.ChunksPrefix) - 2; got != bChunks {
		t.Fatalf("b has %d chunks, had %d", got, bChunks)
	}
	complete(t, b, "b-live")
}

// Objects under chunks/ and manifests/ that are not cove's (not sealed,
// a wrong kind, a name that is no chunk id) are never deleted.
func TestForeignObjectsLeft(t *testing.T) { testForeignObjectsLeft(t, newStore(t)) }

func testForeignObjectsLeft(t *testing.T, s blob.Store) {
	k, _ := newKey(t)
	repo := unpackedRepo(s, k)
	backup(t, repo, "env1-a", files("f", 50)...)
	var id backuprepo.ChunkID
	id[0] = 0xab
	junk := map[string][]byte{
		backuprepo.ChunkKey(id):        []byte("not a sealed object at all"),
		"chunks/zz/not-a-chunk":        []byte("x"),
		backuprepo.ManifestKey("junk"): []byte("{}"),
	}
	// A manifest header under chunks/: a cove object, not a chunk.
	id[0], id[1] = 0xcd, 1
	junk[backuprepo.ChunkKey(id)] = headerOf(t, s, backuprepo.ManifestKey("env1-a"))
	for key, b := range junk {
		blobPut(t, s, key, b)
	}
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	st := run(t, gc)
	if st.Unknown < len(junk) {
		t.Fatalf("unknown objects not counted: %+v", st)
	}
	clk.Add(2 * time.Hour)
	run(t, gc)
	for key := range junk {
		if !exists(t, s, key) {
			t.Errorf("%s deleted", key)
		}
	}
	complete(t, repo, "env1-a")
}

// A condemned list someone without the key wrote is never acted upon.
func TestForgedCondemnedListIgnored(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, _ := newKey(t)
	repo := unpackedRepo(s, k)
	backup(t, repo, "env1-a", files("f", 60)...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-a"))) // its chunks are garbage
	victim := repo.ChunkIDOf(content(60, fileSize))
	gen := newGenerationName(time.Now().Add(-24 * time.Hour))
	blobPut(t, s, repo.GCKey(condemnedDir+gen+"/0"), victim[:])
	blobPut(t, s, repo.GCKey(condemnedDir+gen+"/"+rootName), []byte(`{"markedAt":"2020-01-01T00:00:00Z","pieces":1,"count":1}`))
	st := run(t, collector(s, newClock(), k))
	if st.Swept != 0 || !exists(t, s, backuprepo.ChunkKey(victim)) {
		t.Fatalf("a forged list made the sweep delete: %+v", st)
	}
}

func headerOf(t *testing.T, s blob.Store, key string) []byte {
	t.Helper()
	h, err := s.Get(context.Background(), key, blob.Range{Length: int64(backuprepo.HeaderLen)})
	must(t, err)
	defer h.Close()
	b := make([]byte, backuprepo.HeaderLen)
	if _, err := io.ReadFull(h, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func blobPut(t *testing.T, s blob.Store, key string, b []byte) {
	t.Helper()
	must(t, s.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))))
}
