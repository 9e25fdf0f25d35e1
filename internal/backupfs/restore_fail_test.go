package backupfs

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/errdefs"
)

// chunkFile returns the store file of the first chunk of the file entry p
// in backup name.
func chunkFile(t *testing.T, repo *backuprepo.Repo, blobs, name, p string) string {
	t.Helper()
	m, err := repo.OpenManifest(context.Background(), name)
	must(t, err)
	for {
		e, err := m.Next()
		if err == io.EOF {
			t.Fatalf("%s not in backup %s", p, name)
		}
		must(t, err)
		if e.Path == p {
			id := e.Chunks[0].ID.String()
			f := filepath.Join(blobs, "chunks", id[:2], id)
			if _, err := os.Stat(f); err != nil {
				t.Fatalf("chunk of %s: %v", p, err)
			}
			return f
		}
	}
}

// TestMissingAndCorruptChunk: the files needing a missing or a tampered
// chunk are listed with their paths and not left under their names; the
// others are restored whole.
func TestMissingAndCorruptChunk(t *testing.T) {
	requireRoot(t)
	repo, blobs := newRepoUnpacked(t)
	src := emptyDir(t, "src")
	contents := map[string][]byte{"a": randomBytes(1, 300<<10), "b": randomBytes(2, 2<<20), "c": []byte("small"), "d": randomBytes(3, 100<<10)}
	for n, c := range contents {
		writeFile(t, filepath.Join(src, n), c, 0o644, int(mapA.HostUID), int(mapA.HostGID))
	}
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	must(t, os.Remove(chunkFile(t, repo, blobs, "b", "ws/b")))
	corrupt := chunkFile(t, repo, blobs, "b", "ws/d")
	data, err := os.ReadFile(corrupt)
	must(t, err)
	data[len(data)/2] ^= 1
	must(t, os.WriteFile(corrupt, data, 0o644))

	target := emptyDir(t, "t")
	res, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB})
	if err != nil {
		t.Fatal(err)
	}
	if got := failedPaths(res); !slices.Equal(got, []string{"ws/b", "ws/d"}) || res.FailedCount != 2 {
		t.Fatalf("failed %q (%d)", got, res.FailedCount)
	}
	if !errdefs.Is(res.Failed[0].Err, errdefs.CategoryNotFound) || !backuprepo.IsCorrupt(res.Failed[1].Err) {
		t.Errorf("reasons: %v; %v", res.Failed[0].Err, res.Failed[1].Err)
	}
	ents, err := os.ReadDir(target)
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"a", "c"}) {
		t.Errorf("target holds %q, want the whole files only", names)
	}
	for _, n := range names {
		if got, _ := os.ReadFile(filepath.Join(target, n)); string(got) != string(contents[n]) {
			t.Errorf("%s restored wrong", n)
		}
	}
}

// TestCorruptChunkInPack: a byte changed in a chunk held in a pack fails
// only the file needing that chunk, listed with its path and not left
// under its name; the other files of the pack are restored whole.
func TestCorruptChunkInPack(t *testing.T) {
	requireRoot(t)
	repo, blobs := newRepo(t)
	src := emptyDir(t, "src")
	contents := map[string][]byte{"a": randomBytes(1, 300<<10), "b": []byte("small"), "c": randomBytes(3, 100<<10)}
	for n, c := range contents {
		writeFile(t, filepath.Join(src, n), c, 0o644, int(mapA.HostUID), int(mapA.HostGID))
	}
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	m, err := repo.OpenManifest(context.Background(), "b")
	must(t, err)
	var ref backuprepo.ChunkRef
	for {
		e, err := m.Next()
		must(t, err)
		if e.Path == "ws/c" {
			ref = e.Chunks[0]
			break
		}
	}
	must(t, repo.LoadIndex(context.Background()))
	l, ok := repo.Locate(ref.ID)
	if !ok {
		t.Fatal("the chunk of ws/c is not in a pack")
	}
	pack := filepath.Join(blobs, repo.PackKey(l.Pack))
	data, err := os.ReadFile(pack)
	must(t, err)
	data[l.Offset+l.Length/2] ^= 1
	must(t, os.WriteFile(pack, data, 0o644))

	target := emptyDir(t, "t")
	res, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB})
	if err != nil {
		t.Fatal(err)
	}
	if got := failedPaths(res); !slices.Equal(got, []string{"ws/c"}) || !backuprepo.IsCorrupt(res.Failed[0].Err) {
		t.Fatalf("failed %q (%v), want ws/c corrupt", got, res.Failed)
	}
	for _, n := range []string{"a", "b"} {
		if got, err := os.ReadFile(filepath.Join(target, n)); err != nil || string(got) != string(contents[n]) {
			t.Errorf("%s restored wrong (%v)", n, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(target, "c")); !os.IsNotExist(err) {
		t.Errorf("ws/c left under its name: %v", err)
	}
}

// TestDiskFull restores into a file system too small: a clear error that
// says so, nothing half-written under its name.
func TestDiskFull(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	writeFile(t, filepath.Join(src, "a"), []byte("fits"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	writeFile(t, filepath.Join(src, "big"), randomBytes(9, 3<<20), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})

	mnt := emptyDir(t, "small")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	target := filepath.Join(mnt, "t")
	must(t, os.Mkdir(target, 0o700))
	_, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB})
	// Files are written several at once: the one that meets the full disk
	// first is named, big or (when big took the space first) a.
	if err == nil || !(strings.Contains(err.Error(), "disk full while restoring \"ws/big\"") || strings.Contains(err.Error(), "disk full while restoring \"ws/a\"")) ||
		!errdefs.Is(err, errdefs.CategoryResourceExhausted) {
		t.Fatalf("restore into a full disk: %v", err)
	}
	// Files are written several at once: a, written alongside big, may
	// have been renamed into place or removed when the restore stopped.
	ents, err := os.ReadDir(target)
	must(t, err)
	for _, e := range ents {
		if e.Name() != "a" {
			t.Errorf("target holds %s: only the whole file a may be there", e.Name())
		} else if got, _ := os.ReadFile(filepath.Join(target, "a")); string(got) != "fits" {
			t.Errorf("a holds %q", got)
		}
	}
}

// TestTargetNotEmpty: a restore only writes into empty directories.
func TestTargetNotEmpty(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	target := emptyDir(t, "t")
	must(t, os.WriteFile(filepath.Join(target, "precious"), []byte("mine"), 0o644))
	_, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB})
	if err == nil || !errdefs.Is(err, errdefs.CategoryFailedPrecondition) || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty directory: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(target, "precious")); string(got) != "mine" {
		t.Errorf("precious: %q", got)
	}
}
