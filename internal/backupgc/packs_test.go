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

// packedRepo returns a repository whose writers store packs.
func packedRepo(s blob.Store, k *backuprepo.Key) *backuprepo.Repo {
	r := backuprepo.New(s, k, nil)
	r.SetPacks(true)
	return r
}

// packsOf returns the pack ids the store holds.
func packsOf(t *testing.T, s blob.Store) map[backuprepo.PackID]bool {
	t.Helper()
	out := map[backuprepo.PackID]bool{}
	for info, err := range s.List(context.Background(), backuprepo.PacksPrefix) {
		must(t, err)
		_, p, ok := backuprepo.ParsePackKey(info.Key)
		if !ok {
			t.Fatalf("%s: not a pack's key", info.Key)
		}
		out[p] = true
	}
	return out
}

// A pack none of whose chunks a manifest references is condemned once
// older than the grace and deleted, index first, a grace later; a pack
// holding a referenced chunk is kept whole, and so are the backups.
func TestGCRemovesDeadPacks(t *testing.T) { testRemovesDeadPacks(t, newStore(t)) }

func testRemovesDeadPacks(t *testing.T, s blob.Store) {
	ctx := context.Background()
	k, _ := newKey(t)
	repo := packedRepo(s, k)
	backup(t, repo, "env1-a", files("s", 1, 2)...)
	kept := packsOf(t, s)
	backup(t, repo, "env1-b", files("t", 3, 4)...) // a pack of its own
	var dead []backuprepo.PackID
	for p := range packsOf(t, s) {
		if !kept[p] {
			dead = append(dead, p)
		}
	}
	if len(kept) != 1 || len(dead) != 1 {
		t.Fatalf("packs %d then %d: want one per backup", len(kept), len(dead))
	}
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-b")))
	clk := newClock()
	gc := collector(s, clk, k)
	if st := run(t, gc); st.Condemned != 0 || st.Young < 2 || st.Packs != 2 {
		t.Fatalf("young packs condemned: %+v", st)
	}
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Condemned != 1 {
		t.Fatalf("mark: %+v, want the dead pack condemned", st)
	}
	clk.Add(90 * time.Minute)
	st := run(t, gc)
	if st.Swept != 1 || st.SweptBytes < 2*fileSize {
		t.Fatalf("sweep: %+v", st)
	}
	if exists(t, s, repo.PackKey(dead[0])) || exists(t, s, repo.IndexKey(dead[0])) {
		t.Error("the dead pack or its index is still stored")
	}
	for p := range kept {
		if !exists(t, s, repo.PackKey(p)) || !exists(t, s, repo.IndexKey(p)) {
			t.Error("the live pack or its index was deleted")
		}
	}
	complete(t, backuprepo.New(s, k, nil), "env1-a")

	// A backup of the dead content stores it again, and restores whole.
	dropMarkers(t, repo)
	backup(t, packedRepo(s, k), "env1-c", files("t", 3, 4)...)
	complete(t, backuprepo.New(s, k, nil), "env1-c")
}

// A writer that reuses a chunk of a condemned pack and commits before the
// sweep keeps the pack; one that commits after the sweep deleted it is
// refused, and stores the content again when taken again.
func TestGCCondemnedPackReused(t *testing.T) { testCondemnedPackReused(t, newStore(t)) }

func testCondemnedPackReused(t *testing.T, s blob.Store) {
	ctx := context.Background()
	k, _ := newKey(t)
	repo := packedRepo(s, k)
	old := files("f", 10, 11)
	backup(t, repo, "env1-old", old...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-old")))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Condemned != 1 {
		t.Fatalf("mark: %+v", st)
	}
	w := startBackup(t, packedRepo(s, k), "env1-new", old...)
	sum, err := w.CommitGCSafe(ctx)
	must(t, err)
	if sum.ChunksReused != int64(len(old)) {
		t.Fatalf("the writer stored %d chunks, reused %d: the test must reuse the condemned pack's", sum.ChunksNew, sum.ChunksReused)
	}
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Swept != 0 || st.Kept == 0 {
		t.Fatalf("sweep: %+v, want the pack kept", st)
	}
	complete(t, backuprepo.New(s, k, nil), "env1-new")

	// Condemned again once unreferenced; a writer reusing it commits
	// after the sweep: refused.
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-new")))
	clk.Add(2 * time.Hour)
	run(t, gc) // sweeps nothing due; marks
	late := startBackup(t, packedRepo(s, k), "env1-late", old...)
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Swept == 0 {
		t.Fatalf("sweep deleted nothing: %+v", st)
	}
	if _, err := late.CommitGCSafe(ctx); !errors.Is(err, backuprepo.ErrSwept) {
		t.Fatalf("a writer reusing a pack swept meanwhile: %v, want ErrSwept", err)
	}
	dropMarkers(t, repo)
	backup(t, packedRepo(s, k), "env1-again", old...)
	complete(t, backuprepo.New(s, k, nil), "env1-again")
}

// dropMarkers deletes the ended sweep markers, as testWriterAfterSweepRefused
// does: the storage's clock cannot be moved, and a writer starting within
// 2 s of a sweep's end is refused.
func dropMarkers(t *testing.T, repo *backuprepo.Repo) {
	t.Helper()
	markers, err := repo.SweepMarkers(context.Background())
	must(t, err)
	for _, m := range markers {
		if m.End.IsZero() {
			t.Fatalf("marker %s has no end", m.ID)
		}
		must(t, repo.DeleteSweepMarker(context.Background(), m.ID))
	}
}

// A pack without an index (its writer died before storing it) is
// deleted once older than the grace; a young one is left to its writer.
func TestGCOrphanPack(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, _ := newKey(t)
	backup(t, packedRepo(s, k), "env1-a", files("s", 1)...)
	var p backuprepo.PackID
	for q := range packsOf(t, s) {
		p = q
	}
	must(t, s.Delete(ctx, backuprepo.IndexKey(k.ID(), p)))
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-a")))
	clk := newClock()
	gc := collector(s, clk, k)
	if st := run(t, gc); st.Condemned != 0 {
		t.Fatalf("a young pack without index condemned: %+v", st)
	}
	clk.Add(2 * time.Hour)
	run(t, gc)
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Swept != 1 || exists(t, s, backuprepo.PackKey(k.ID(), p)) {
		t.Fatalf("sweep: %+v, want the pack without index deleted", st)
	}
}

// Objects under a collected key's packs/ that are not its packs are
// left: a file that is not a pack, and another organization's pack put
// under this key's name (the header names the key that sealed it); so is
// another organization's own pack, not even listed.
func TestGCForeignPacksLeft(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, _ := newKey(t)
	other, _ := newKey(t)
	backup(t, packedRepo(s, other), "env2-a", files("o", 5)...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env2-a")))
	var theirs backuprepo.PackID
	for p := range packsOf(t, s) {
		theirs = p
	}
	rc, err := s.Get(ctx, backuprepo.PackKey(other.ID(), theirs), blob.Range{})
	must(t, err)
	data, err := io.ReadAll(rc)
	rc.Close()
	must(t, err)
	must(t, s.Put(ctx, backuprepo.PackKey(k.ID(), backuprepo.PackID{0xcd}), bytes.NewReader(data), int64(len(data))))
	junk := backuprepo.PackKey(k.ID(), backuprepo.PackID{0xab})
	must(t, s.Put(ctx, junk, bytes.NewReader([]byte("not a pack")), 10))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	run(t, gc)
	clk.Add(2 * time.Hour)
	st := run(t, gc)
	if st.Swept != 0 || st.Condemned != 0 || st.Unknown == 0 {
		t.Fatalf("%+v: want the junk unknown, nothing condemned or swept", st)
	}
	if len(packsOf(t, s)) != 3 {
		t.Error("a pack not of the collector's keys was deleted")
	}
}

// Packs half unreferenced, and small packs, are repacked: the referenced
// chunks are copied into a new pack, the old packs condemned and then
// deleted, and every backup still restores whole, read through a
// repository that read the index before the repacking.
func TestGCRepacksPartlyDeadPacks(t *testing.T) { testRepacksPartlyDeadPacks(t, newStore(t)) }

func testRepacksPartlyDeadPacks(t *testing.T, s blob.Store) {
	ctx := context.Background()
	k, _ := newKey(t)
	all := files("f", 30, 31, 32, 33)
	backup(t, packedRepo(s, k), "env1-a", all...)
	backup(t, packedRepo(s, k), "env1-b", all[:2]...) // reuses two of a's chunks: a pack of its piece only
	before := packsOf(t, s)
	if len(before) != 2 {
		t.Fatalf("%d packs, want one per backup", len(before))
	}
	reader := backuprepo.New(s, k, nil)
	must(t, reader.LoadIndex(ctx))
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-a")))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	st := run(t, gc)
	if st.Repacked != 2 || st.Condemned != 2 || st.RepackedBytes < 2*fileSize {
		t.Fatalf("mark: %+v, want both packs repacked (a's half dead, b's small) and condemned", st)
	}
	clk.Add(90 * time.Minute)
	if st := run(t, gc); st.Swept != 2 {
		t.Fatalf("sweep: %+v, want both old packs deleted", st)
	}
	after := packsOf(t, s)
	for p := range before {
		if after[p] {
			t.Errorf("old pack %s kept", p)
		}
	}
	if len(after) != 1 {
		t.Errorf("%d packs after repacking, want 1", len(after))
	}
	complete(t, reader, "env1-b") // the index it read names the deleted packs
	complete(t, backuprepo.New(s, k, nil), "env1-b")
}

// A chunk unreferenced when a pack was repacked (so not copied) and
// referenced by a backup committed before the sweep keeps the old pack.
func TestGCRepackedPackKeptForNewReference(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, _ := newKey(t)
	all := files("f", 40, 41, 42, 43)
	backup(t, packedRepo(s, k), "env1-a", all...)
	backup(t, packedRepo(s, k), "env1-b", all[:1]...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-a")))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Repacked == 0 {
		t.Fatalf("mark: %+v, want a repack", st)
	}
	// A writer reuses a chunk the repack did not copy, and commits.
	w := startBackup(t, packedRepo(s, k), "env1-c", all[3:]...)
	sum, err := w.CommitGCSafe(ctx)
	must(t, err)
	if sum.ChunksReused != 1 {
		t.Fatalf("the writer stored %d chunks, reused %d: the test must reuse the uncopied chunk", sum.ChunksNew, sum.ChunksReused)
	}
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Kept == 0 {
		t.Fatalf("sweep: %+v, want a's pack kept", st)
	}
	complete(t, backuprepo.New(s, k, nil), "env1-c")
	complete(t, backuprepo.New(s, k, nil), "env1-b")
}

// Two packs holding the same chunk, both condemned, the chunk referenced
// again before the sweep: neither counts on the other (both are to be
// deleted, maybe by two collectors at once, each counting on the copy the
// other deletes), so both are kept (review S13-11).
func TestGCCondemnedCopiesKeepEachOther(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, _ := newKey(t)
	x := files("x", 61)
	// b's writer read the index before a's pack existed: each stores x.
	wb, err := packedRepo(s, k).NewWriter(ctx, "env2-b", backuprepo.Metadata{Time: time.Now(), Trigger: "manual"})
	must(t, err)
	backup(t, packedRepo(s, k), "env1-a", x...)
	must(t, wb.Add(ctx, backuprepo.Entry{Path: ".", Type: backuprepo.TypeDir, Mode: 0o755}))
	must(t, wb.AddFile(ctx, backuprepo.Entry{Path: x[0].path, Mode: 0o644}, bytes.NewReader(content(x[0].seed, fileSize))))
	_, err = wb.CommitGCSafe(ctx)
	must(t, err)
	xid := packedRepo(s, k).ChunkIDOf(content(x[0].seed, fileSize))
	reader := backuprepo.New(s, k, nil)
	must(t, reader.LoadIndex(ctx))
	if n := len(reader.Copies(xid)); n != 2 {
		t.Fatalf("%d copies of x, want 2", n)
	}
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-a")))
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env2-b")))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Condemned != 2 {
		t.Fatalf("mark: %+v, want both packs condemned", st)
	}
	backup(t, packedRepo(s, k), "env3-c", x...) // x referenced again
	clk.Add(2 * time.Hour)
	if st := run(t, gc); st.Swept != 0 || st.Kept != 2 {
		t.Fatalf("sweep: %+v, want both copies kept", st)
	}
	complete(t, backuprepo.New(s, k, nil), "env3-c")
}
