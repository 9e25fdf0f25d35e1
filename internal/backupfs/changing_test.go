package backupfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/errdefs"
)

// TestChangedWhileRead: a file changed between listing and reading is
// read again and stored whole; one that changes during every read is
// stored as read the second time and listed, never silently, and read
// again by the next backup.
func TestChangedWhileRead(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	for _, n := range []string{"once", "always", "quiet"} {
		writeFile(t, filepath.Join(src, n), []byte(n+":"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	}
	appendTo := func(n, s string) {
		f, err := os.OpenFile(filepath.Join(src, n), os.O_APPEND|os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteString(s)
		must(t, err)
		must(t, f.Close())
	}
	var opens countOpens
	opens.install(t, func(e *confine.Entry) {
		if e.Rel == "once" {
			appendTo("once", "changed before the read")
		}
	})
	orig := afterRead
	afterRead = func(rel string) {
		if rel == "always" {
			appendTo("always", "+")
		}
	}
	t.Cleanup(func() { afterRead = orig })

	res := backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: src})
	if !slices.Equal(res.ChangedWhileRead, []string{"ws/always"}) || res.ChangedWhileReadCount != 1 {
		t.Errorf("changed while read: %q (%d)", res.ChangedWhileRead, res.ChangedWhileReadCount)
	}
	got := storedContents(t, repo, "b1")
	// "once" whole as it is now; "always" as it was when read the second
	// time (one "+" appended after the first read).
	want := map[string]string{"ws/once": "once:changed before the read", "ws/always": "always:+", "ws/quiet": "quiet:"}
	for p, w := range want {
		if string(got[p]) != w {
			t.Errorf("%s stored %q, want %q", p, got[p], w)
		}
	}
	// The next backup reads the torn file again (and "once", whose listed
	// metadata was stale), not the quiet one.
	afterRead = orig
	before := len(opens.got())
	backup(t, repo, "b2", "b1", mapA, Source{Name: "ws", Dir: src})
	if read := opens.got()[before:]; !slices.Equal(read, []string{"always", "once"}) {
		t.Errorf("second backup read %q", read)
	}
}

// TestBackupCancelled: a backup cancelled halfway (the runner stopping)
// returns the context's error and commits nothing.
func TestBackupCancelled(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	for _, n := range []string{"a", "b", "c"} {
		writeFile(t, filepath.Join(src, n), []byte(n), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var opens countOpens
	opens.install(t, func(e *confine.Entry) {
		if e.Rel == "b" {
			cancel()
		}
	})
	w, err := repo.NewWriter(ctx, "b", testMeta())
	must(t, err)
	_, err = Backup(ctx, w, []Source{{Name: "ws", Dir: src}}, BackupOptions{Map: mapA})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v", err)
	}
	if _, err := repo.OpenManifest(context.Background(), "b"); !errdefs.Is(err, errdefs.CategoryNotFound) {
		t.Errorf("a cancelled backup exists: %v", err)
	}
	if got := opens.got(); slices.Contains(got, "c") {
		t.Errorf("went on reading after the cancel: %q", got)
	}
}
