package backupgc

// A chunk stored again (its other copy does not check out, so a writer
// stored a good copy in another pack) is not deleted on the strength of
// the damaged copy, even when the index calls the damaged one newer:
// repacking and sweeping count on another copy only once they read it and
// it checked out (review S13-16).

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

func TestGCDamagedOlderCopyNotCountedOnRepack(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	ls, err := localblob.New(dir, nil)
	must(t, err)
	t.Cleanup(func() { ls.Close() })
	s := durableStore{ls}
	k, _ := newKey(t)
	var seeds []uint64
	for i := uint64(0); i < 40; i++ {
		seeds = append(seeds, 100+i)
	}
	big := files("a", seeds...) // ~2.5 MiB: one big, fully live pack (no repack candidate)
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
	// The older copy (in a) is damaged: as when a writer found it did not
	// check out and stored x again (storedWhole), or bit rot since.
	repo := packedRepo(s, k)
	entries, err := repo.ReadIndex(ctx, a)
	must(t, err)
	xid := repo.ChunkIDOf(content(x.seed, fileSize))
	f, err := os.OpenFile(filepath.Join(dir, backuprepo.PackKey(k.ID(), a)), os.O_RDWR, 0)
	must(t, err)
	for _, e := range entries {
		if e.ID == xid {
			_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(e.Offset)+int64(e.Length)/2)
			must(t, err)
		}
	}
	f.Close()
	// And its index says it is the newer copy (equal index times on S3's
	// whole seconds break by pack id): only reading it tells.
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(dir, backuprepo.IndexKey(k.ID(), a)), later, later))
	complete(t, backuprepo.New(s, k, nil), "env2-b")          // restores: x read from b's pack (newest)
	backup(t, packedRepo(s, k), "env3-c", files("c", 300)...) // another small pack: a repack
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	st := run(t, gc)
	t.Logf("mark: %+v", st)
	clk.Add(2 * time.Hour)
	st = run(t, gc)
	t.Logf("sweep: %+v", st)
	complete(t, backuprepo.New(s, k, nil), "env2-b")
}

func TestGCDamagedOlderCopyNotCountedOnSweep(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	ls, err := localblob.New(dir, nil)
	must(t, err)
	t.Cleanup(func() { ls.Close() })
	s := durableStore{ls}
	k, _ := newKey(t)
	var seeds []uint64
	for i := uint64(0); i < 40; i++ {
		seeds = append(seeds, 100+i)
	}
	big := files("a", seeds...) // ~2.5 MiB: one big, fully live pack (no repack candidate)
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
	// The older copy (in a) is damaged: as when a writer found it did not
	// check out and stored x again (storedWhole), or bit rot since.
	repo := packedRepo(s, k)
	entries, err := repo.ReadIndex(ctx, a)
	must(t, err)
	xid := repo.ChunkIDOf(content(x.seed, fileSize))
	f, err := os.OpenFile(filepath.Join(dir, backuprepo.PackKey(k.ID(), a)), os.O_RDWR, 0)
	must(t, err)
	for _, e := range entries {
		if e.ID == xid {
			_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(e.Offset)+int64(e.Length)/2)
			must(t, err)
		}
	}
	f.Close()
	// And its index says it is the newer copy (equal index times on S3's
	// whole seconds break by pack id): only reading it tells.
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(dir, backuprepo.IndexKey(k.ID(), a)), later, later))
	complete(t, backuprepo.New(s, k, nil), "env2-b") // restores: x read from b's pack (newest)
	// b is dropped: its pack (x's good copy) is condemned whole.
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env2-b")))
	clk := newClock()
	gc := collector(s, clk, k)
	clk.Add(2 * time.Hour)
	st := run(t, gc)
	t.Logf("mark: %+v", st)
	// A writer reuses x (its preferred, good copy in b's pack) and commits
	// before the sweep.
	backup(t, packedRepo(s, k), "env4-d", files("x", x.seed)...)
	clk.Add(2 * time.Hour)
	st = run(t, gc)
	t.Logf("sweep: %+v", st)
	complete(t, backuprepo.New(s, k, nil), "env4-d")
}
