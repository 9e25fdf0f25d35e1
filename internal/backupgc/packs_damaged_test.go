package backupgc

// Collection of packs holding damaged chunks: it never deletes the only
// good copy of a chunk, and it does not copy the good chunks of a damaged
// pack again and again.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob/localblob"
)

// durableDir returns a directory store whose Puts count as durable (as
// S3's), and its directory.
func durableDir(t *testing.T) (durableStore, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	ls, err := localblob.New(dir, nil)
	must(t, err)
	t.Cleanup(func() { ls.Close() })
	return durableStore{ls}, dir
}

// damage changes bytes in the middle of chunk id's copy in pack p.
func damage(t *testing.T, s durableStore, dir string, k *backuprepo.Key, p backuprepo.PackID, id backuprepo.ChunkID) {
	t.Helper()
	entries, err := packedRepo(s, k).ReadIndex(context.Background(), p)
	must(t, err)
	f, err := os.OpenFile(filepath.Join(dir, backuprepo.PackKey(k.ID(), p)), os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	for _, e := range entries {
		if e.ID == id {
			_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(e.Offset)+int64(e.Length)/2)
			must(t, err)
			return
		}
	}
	t.Fatalf("chunk %s not in pack %s", id, p)
}

// A pack holding a referenced chunk that does not check out is not
// condemned by its repack (the chunk is nowhere else), and its good live
// chunks, copied once, are not copied again by the next marks (Repack
// skips a chunk whose newer copy checks out, and copies a chunk once per
// run): the bytes in packs stay bounded (review S13-12).
func TestGCRepackOfDamagedPackDoesNotGrow(t *testing.T) {
	ctx := context.Background()
	s, dir := durableDir(t)
	k, _ := newKey(t)
	all := files("f", 30, 31, 32, 33)
	backup(t, packedRepo(s, k), "env1-a", all...)
	var a backuprepo.PackID
	for p := range packsOf(t, s) {
		a = p
	}
	backup(t, packedRepo(s, k), "env1-b", all[:2]...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-a")))
	damage(t, s, dir, k, a, packedRepo(s, k).ChunkIDOf(content(31, fileSize))) // bit rot, a bad disk block

	clk := newClock()
	var sizes []int64
	for range 6 {
		clk.Add(2 * time.Hour)
		run(t, collector(s, clk, k)) // sweep due list, mark
		var total int64
		for info, err := range s.List(ctx, backuprepo.PacksPrefix) {
			must(t, err)
			total += info.Size
		}
		sizes = append(sizes, total)
	}
	t.Logf("bytes in packs after each run: %v", sizes)
	if sizes[len(sizes)-1] > sizes[1]+fileSize {
		t.Fatalf("packs grow by a copy of the same live chunks every run: %v", sizes)
	}
}

// olderDamagedCopy makes chunk x stored twice: in a big, fully live pack
// of backup env1-a, where it is damaged (as when a writer found it did
// not check out and stored it again, or bit rot since) though its index
// says it is the newer copy (equal index times on S3's whole seconds
// break by pack id), and in backup env2-b's small pack, good. It returns
// x.
func olderDamagedCopy(t *testing.T, s durableStore, dir string, k *backuprepo.Key) file {
	t.Helper()
	ctx := context.Background()
	var seeds []uint64
	for i := range uint64(40) {
		seeds = append(seeds, 100+i)
	}
	big := files("a", seeds...) // ~2.5 MiB: no repack candidate
	x := big[20]
	// b's writer read the index before a's pack existed: it stores x again.
	wb, err := packedRepo(s, k).NewWriter(ctx, "env2-b", backuprepo.Metadata{Time: time.Now(), Trigger: "manual"})
	must(t, err)
	backup(t, packedRepo(s, k), "env1-a", big...)
	var a backuprepo.PackID
	for p := range packsOf(t, s) {
		a = p
	}
	must(t, wb.Add(ctx, backuprepo.Entry{Path: ".", Type: backuprepo.TypeDir, Mode: 0o755}))
	must(t, wb.AddFile(ctx, backuprepo.Entry{Path: "x", Mode: 0o644}, bytes.NewReader(content(x.seed, fileSize))))
	_, err = wb.CommitGCSafe(ctx)
	must(t, err)
	damage(t, s, dir, k, a, packedRepo(s, k).ChunkIDOf(content(x.seed, fileSize)))
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(dir, backuprepo.IndexKey(k.ID(), a)), later, later))
	complete(t, backuprepo.New(s, k, nil), "env2-b") // x read from the good copy
	return x
}

// A chunk whose other copy is damaged is not deleted on the strength of
// that copy, even when the index calls the damaged one newer: a repack
// (of b's small pack) and a sweep count on another copy only once they
// read it and it checked out (review S13-16).
func TestGCDamagedCopyNotCountedOnRepack(t *testing.T) {
	s, dir := durableDir(t)
	k, _ := newKey(t)
	olderDamagedCopy(t, s, dir, k)
	backup(t, packedRepo(s, k), "env3-c", files("c", 300)...) // another small pack: a repack
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	t.Logf("mark: %+v", run(t, gc))
	clk.Add(2 * time.Hour)
	t.Logf("sweep: %+v", run(t, gc))
	complete(t, backuprepo.New(s, k, nil), "env2-b")
}

// The same when the good copy's pack is condemned whole and a writer
// reuses the chunk before the sweep.
func TestGCDamagedCopyNotCountedOnSweep(t *testing.T) {
	s, dir := durableDir(t)
	k, _ := newKey(t)
	x := olderDamagedCopy(t, s, dir, k)
	must(t, s.Delete(context.Background(), backuprepo.ManifestKey("env2-b"))) // b's pack condemned whole
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	t.Logf("mark: %+v", run(t, gc))
	backup(t, packedRepo(s, k), "env4-d", files("x", x.seed)...) // reuses x before the sweep
	clk.Add(2 * time.Hour)
	t.Logf("sweep: %+v", run(t, gc))
	complete(t, backuprepo.New(s, k, nil), "env4-d")
}
