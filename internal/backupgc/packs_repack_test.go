package backupgc

// A pack holding a referenced chunk that does not check out is not
// condemned by its repack (the chunk is nowhere else), and its good live
// chunks, copied once, are not copied again by the next marks (Repack
// skips a chunk already in a pack that is not a candidate, and copies a
// chunk once per run): the bytes in packs stay bounded (review S13-12).

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob/localblob"
)

func TestGCRepackOfDamagedPackDoesNotGrow(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "blobs")
	ls, err := localblob.New(dir, nil)
	must(t, err)
	t.Cleanup(func() { ls.Close() })
	s := durableStore{ls}
	k, _ := newKey(t)
	all := files("f", 30, 31, 32, 33)
	backup(t, packedRepo(s, k), "env1-a", all...)
	var a backuprepo.PackID
	for p := range packsOf(t, s) {
		a = p
	}
	backup(t, packedRepo(s, k), "env1-b", all[:2]...)
	must(t, s.Delete(ctx, backuprepo.ManifestKey("env1-a")))
	// One live chunk of a's pack is damaged (bit rot, a bad disk block).
	repo := packedRepo(s, k)
	entries, err := repo.ReadIndex(ctx, a)
	must(t, err)
	bad := repo.ChunkIDOf(content(31, fileSize))
	f, err := os.OpenFile(filepath.Join(dir, backuprepo.PackKey(k.ID(), a)), os.O_RDWR, 0)
	must(t, err)
	for _, e := range entries {
		if e.ID == bad {
			_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(e.Offset)+int64(e.Length)/2)
			must(t, err)
		}
	}
	f.Close()

	clk := newClock()
	var sizes []int64
	for cycle := 0; cycle < 6; cycle++ {
		clk.Add(2 * time.Hour)
		run(t, NewCollector(s, []*backuprepo.Key{k}, Options{Grace: time.Hour, Now: clk.Now})) // sweep due list, mark
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
