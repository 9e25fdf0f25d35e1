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

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/errdefs"
)

// keepMtime runs change on p's parent directory and puts the directory's
// mtime back, so only the change itself can tell the backups apart.
func keepMtime(t *testing.T, dir string, change func()) {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(dir, &st))
	change()
	ts := []unix.Timespec{st.Atim, st.Mtim}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, dir, ts, unix.AT_SYMLINK_NOFOLLOW))
}

func TestIncremental(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	sources := richTrees(t, mapA)
	ws, up := sources[0].Dir, sources[1].Dir
	full := backup(t, repo, "b1", "", mapA, sources...)
	if full.Read != full.Files-0 || full.Read == 0 {
		t.Fatalf("full backup read %d of %d files", full.Read, full.Files)
	}

	var opens countOpens
	opens.install(t, nil)
	step := func(name, prev string, wantChanged bool, wantOpens ...string) BackupResult {
		t.Helper()
		before := len(opens.got())
		res := backup(t, repo, name, prev, mapA, sources...)
		got := opens.got()[before:]
		if res.Changed != wantChanged {
			t.Errorf("%s: changed %v, want %v", name, res.Changed, wantChanged)
		}
		if !slices.Equal(got, wantOpens) && !(len(got) == 0 && len(wantOpens) == 0) {
			t.Errorf("%s: files read %q, want %q", name, got, wantOpens)
		}
		_, err := repo.OpenManifest(context.Background(), name)
		if committed := err == nil; committed != wantChanged {
			t.Errorf("%s: committed %v (%v), want %v", name, committed, err, wantChanged)
		} else if !committed && !errdefs.Is(err, errdefs.CategoryNotFound) {
			t.Errorf("%s: %v", name, err)
		}
		if wantChanged && res.Summary.Files != res.Files {
			t.Errorf("%s: summary %d files, walked %d", name, res.Summary.Files, res.Files)
		}
		return res
	}

	// Nothing changed: no file is opened, nothing committed.
	step("b2", "b1", false)

	// One file grows: it alone is read.
	f, err := os.OpenFile(filepath.Join(ws, "shared", "x"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString(" and more")
	must(t, err)
	must(t, f.Close())
	step("b3", "b1", true, "shared/x")
	// The incremental backup restores whole (reused chunks included).
	targets := targetsFor(t, sources)
	res, err := Restore(context.Background(), repo, "b3", targets, RestoreOptions{Map: mapB})
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("restore b3: %v %+v", err, res.Failed)
	}
	for i, s := range sources {
		sameTrees(t, snapshot(t, s.Dir, mapA), snapshot(t, targets[i].Dir, mapB))
	}
	step("b4", "b3", false)

	// A deletion alone (the directory's mtime put back) is a change.
	keepMtime(t, filepath.Join(ws, "repo"), func() { must(t, os.Remove(filepath.Join(ws, "repo", "empty"))) })
	step("b5", "b3", true) // b4 was not committed

	// A new whiteout alone is a change.
	keepMtime(t, filepath.Join(up, "etc"), func() { must(t, unix.Mknod(filepath.Join(up, "etc", "issue"), unix.S_IFCHR, 0)) })
	step("b6", "b5", true)

	// An attribute of a directory alone is a change.
	must(t, unix.Setxattr(filepath.Join(up, "home"), "user.k", []byte("v"), 0))
	step("b7", "b6", true)

	// A mode alone: the file is read again (its ctime moved) and the
	// backup differs.
	must(t, os.Chmod(filepath.Join(ws, "repo", "big.bin"), 0o600))
	step("b8", "b7", true, "repo/big.bin")

	// Only the ctime moves (same mode set again): read again, same
	// content and metadata, no backup.
	must(t, os.Chmod(filepath.Join(ws, "repo", "big.bin"), 0o600))
	step("b9", "b8", false, "repo/big.bin")
	// (b8 stays the last backup: its ctime is older than the file's.)

	// The last tree's last entry removed is a change too.
	keepMtime(t, filepath.Join(ws), func() { must(t, os.Remove(filepath.Join(ws, "rel"))) })
	step("b10", "b8", true, "repo/big.bin")

	// An attribute of a file alone: its ctime moves, it is read again and
	// the backup keeps the attribute.
	must(t, unix.Setxattr(filepath.Join(ws, "repo", "README"), "user.more", []byte("2"), 0))
	step("b11", "b10", true, "repo/README")

	// Unchanged files keep their previous attributes (capabilities, ACLs,
	// user attributes) without a value being read: only the changed file
	// and directories are looked at.
	var readOf []string
	oldRead := readXattr
	readXattr = func(ce *confine.Entry, name string, max int) ([]byte, error) {
		if ce.Type() == unix.S_IFREG {
			readOf = append(readOf, ce.Rel)
		}
		return oldRead(ce, name, max)
	}
	t.Cleanup(func() { readXattr = oldRead })
	must(t, os.WriteFile(filepath.Join(ws, "shared", "y"), []byte("new"), 0o644))
	step("b12", "b11", true, "shared/y")
	if len(readOf) != 0 {
		t.Errorf("attributes of files read: %q; want none (unchanged files keep theirs, the new one has none)", readOf)
	}
	targets = targetsFor(t, sources)
	res, err = Restore(context.Background(), repo, "b12", targets, RestoreOptions{Map: mapB})
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("restore b12: %v %+v", err, res.Failed)
	}
	for i, s := range sources {
		sameTrees(t, snapshot(t, s.Dir, mapA), snapshot(t, targets[i].Dir, mapB))
	}
}

// TestPreviousUnreadable: a previous backup whose manifest cannot be read
// to its end (a piece lost) makes the backup read every file again and
// commit, never skip.
func TestPreviousUnreadable(t *testing.T) {
	requireRoot(t)
	repo, blobs := newRepoUnpacked(t)
	src := emptyDir(t, "src")
	for i := range 3 {
		writeFile(t, filepath.Join(src, string(rune('a'+i))), []byte{byte(i)}, 0o644, int(mapA.HostUID), int(mapA.HostGID))
	}
	backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: src})
	prev, err := repo.OpenManifest(context.Background(), "b1")
	must(t, err)
	// The manifest's only piece: every chunk but the three files'.
	files := map[string]bool{}
	for _, p := range []string{"ws/a", "ws/b", "ws/c"} {
		files[chunkFile(t, repo, blobs, "b1", p)] = true
	}
	must(t, filepath.Walk(filepath.Join(blobs, "chunks"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !files[p] {
			return os.Remove(p)
		}
		return err
	}))
	w, err := repo.NewWriter(context.Background(), "b2", testMeta())
	must(t, err)
	res, err := Backup(context.Background(), w, []Source{{Name: "ws", Dir: src}}, BackupOptions{Map: mapA, Previous: prev, Log: testLog(t)})
	if err != nil || !res.Changed || res.Read != 3 || res.Summary.Files != 3 {
		t.Fatalf("backup over an unreadable previous one: %v changed %v read %d", err, res.Changed, res.Read)
	}
}

// A changed file removed after the walk listed it and before its
// attributes were read is left out, and the backup counts as changed: it
// is committed without the file (REV-S9: the previous entry was taken
// before the attributes were read).
func TestFileRemovedBeforeAttributes(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	ws := t.TempDir()
	writeFile(t, filepath.Join(ws, "keep"), []byte("keep"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	writeFile(t, filepath.Join(ws, "gone"), []byte("one"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	src := Source{Name: "workspace", Dir: ws}
	backup(t, repo, "b1", "", mapA, src)
	// Changed (so its attributes are listed), then removed just before.
	keepMtime(t, ws, func() {
		writeFile(t, filepath.Join(ws, "gone"), []byte("two"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	})
	old := listXattrs
	listXattrs = func(ce *confine.Entry) ([]string, error) {
		if ce.Rel == "gone" {
			keepMtime(t, ws, func() { must(t, os.Remove(filepath.Join(ws, "gone"))) })
		}
		return old(ce)
	}
	t.Cleanup(func() { listXattrs = old })
	res := backup(t, repo, "b2", "b1", mapA, src)
	if !res.Changed {
		t.Fatal("backup after a file was removed: not changed, not committed")
	}
	m, err := repo.OpenManifest(context.Background(), "b2")
	must(t, err)
	for {
		e, err := m.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		if strings.HasSuffix(e.Path, "gone") {
			t.Errorf("the removed file is in the backup: %+v", e)
		}
	}
}
