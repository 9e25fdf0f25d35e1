package backupfs

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
)

// TestSparseFileHolesNotRead (review REV-5): a sparse file's holes are
// neither read nor chunked — what a backup reads is its data (and holes
// shorter than a chunk) — and it restores with the same content, sparse.
// A 256 GiB file of holes costs a backup next to nothing.
func TestSparseFileHolesNotRead(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	p := filepath.Join(src, "disk.img")
	f, err := os.Create(p)
	must(t, err)
	const size = 1 << 30
	must(t, f.Truncate(size))
	var data int64
	for _, w := range []struct {
		off int64
		n   int
	}{{0, 100 << 10}, {300 << 20, 5 << 20}, {400 << 20, 4096}, {400<<20 + 1<<20, 4096}, {size - 10, 10}} {
		_, err := f.WriteAt(randomBytes(uint64(w.off+1), w.n), w.off)
		must(t, err)
		data += int64(w.n)
	}
	must(t, f.Close())
	huge := filepath.Join(src, "huge.img")
	must(t, os.WriteFile(huge, []byte("head"), 0o644))
	must(t, os.Truncate(huge, backuprepo.MaxFileSize))

	var read atomic.Int64
	orig := onRead
	onRead = func(n int) { read.Add(int64(n)) }
	t.Cleanup(func() { onRead = orig })
	res := backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	if res.Files != 2 || res.Bytes != size+backuprepo.MaxFileSize || len(res.Skipped) != 0 {
		t.Fatalf("%d files, %d bytes, skipped %q", res.Files, res.Bytes, res.Skipped)
	}
	// Data, the 1 MiB hole read through, and the chunker's reads past a
	// segment's end: far from the files' sizes.
	if got := read.Load(); got > data+(1<<20)+4*backuprepo.MaxChunkSize {
		t.Errorf("read %d bytes of files holding %d bytes of data", got, data)
	}
	tg := emptyDir(t, "t")
	rres, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: tg}}, RestoreOptions{Map: mapB})
	if err != nil || rres.FailedCount != 0 {
		t.Fatalf("restore: %v %+v", err, rres.Failed)
	}
	if a, b := fileHash(t, p), fileHash(t, filepath.Join(tg, "disk.img")); a != b {
		t.Errorf("disk.img restored with other content")
	}
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(tg, "huge.img"), &st))
	if st.Size != backuprepo.MaxFileSize || st.Blocks*512 > 64<<20 {
		t.Errorf("huge.img restored: %d bytes, %d allocated", st.Size, st.Blocks*512)
	}
	must(t, unix.Stat(filepath.Join(tg, "disk.img"), &st))
	if st.Blocks*512 > 64<<20 {
		t.Errorf("disk.img restored with %d bytes allocated: not sparse", st.Blocks*512)
	}
}

func fileHash(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
