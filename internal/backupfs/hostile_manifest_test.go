package backupfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
)

// manifest writes backup name from entries (in order); a file entry's
// content is its Target field's bytes, moved out before Add.
func manifest(t testing.TB, repo *backuprepo.Repo, name string, entries ...backuprepo.Entry) {
	t.Helper()
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, name, testMeta())
	must(t, err)
	for _, e := range entries {
		if e.Type == backuprepo.TypeFile {
			refs, size, err := w.StoreContent(ctx, strings.NewReader(e.Target))
			must(t, err)
			e.Target, e.Chunks, e.Size = "", refs, size
		}
		if err := w.Add(ctx, e); err != nil {
			t.Fatalf("add %q: %v", e.Path, err)
		}
	}
	_, err = w.Commit(ctx)
	must(t, err)
}

// sandbox is a target "t" beside a directory "outside" holding a canary,
// and a unique name at the host's root a restore must never create.
type sandbox struct {
	base, target, outside, canary, rootName string
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	s := &sandbox{base: t.TempDir()}
	s.target, s.outside = filepath.Join(s.base, "t"), filepath.Join(s.base, "outside")
	s.canary = filepath.Join(s.outside, "canary")
	s.rootName = "cove-test-" + filepath.Base(s.base)
	must(t, os.Mkdir(s.target, 0o700))
	must(t, os.Mkdir(s.outside, 0o755))
	must(t, os.WriteFile(s.canary, []byte("canary"), 0o644))
	t.Cleanup(func() { os.RemoveAll("/" + s.rootName) })
	return s
}

// untouched fails t if anything outside the target changed.
func (s *sandbox) untouched(t testing.TB) {
	t.Helper()
	ents, err := os.ReadDir(s.base)
	must(t, err)
	if len(ents) != 2 {
		t.Errorf("the sandbox holds %d entries: %v", len(ents), ents)
	}
	ents, err = os.ReadDir(s.outside)
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Lstat(s.canary, &st))
	got, err := os.ReadFile(s.canary)
	must(t, err)
	if len(ents) != 1 || st.Nlink != 1 || string(got) != "canary" || st.Uid != 0 {
		t.Errorf("outside changed: %v, canary %q nlink %d uid %d", ents, got, st.Nlink, st.Uid)
	}
	if _, err := os.Lstat("/" + s.rootName); err == nil {
		t.Errorf("/%s created", s.rootName)
	}
}

func dir(p string) backuprepo.Entry {
	return backuprepo.Entry{Path: p, Type: backuprepo.TypeDir, Mode: 0o755, Mtime: 1e18}
}
func file(p, content string) backuprepo.Entry {
	return backuprepo.Entry{Path: p, Type: backuprepo.TypeFile, Mode: 0o644, Target: content}
}
func symlink(p, target string) backuprepo.Entry {
	return backuprepo.Entry{Path: p, Type: backuprepo.TypeSymlink, Mode: 0o777, Target: target}
}
func hardlink(p, target string) backuprepo.Entry {
	return backuprepo.Entry{Path: p, Type: backuprepo.TypeHardlink, Mode: 0o644, Target: target}
}

func failedPaths(res RestoreResult) []string {
	var out []string
	for _, f := range res.Failed {
		out = append(out, f.Path)
	}
	return out
}

// TestHostileManifest restores manifests a holder of the key could write
// (every entry valid on its own): nothing is written outside the target,
// each refused entry is listed with a reason, the rest restored.
func TestHostileManifest(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	s := newSandbox(t)
	hugeCap := capV3(70000) // a root beyond the range
	redirect := dir("t/x")
	redirect.Xattrs = map[string][]byte{"trusted.overlay.redirect": []byte("/etc"), "trusted.foo": []byte("bar"), "security.evil": []byte("label"), "user.ok": []byte("1")}
	capped := file("t/y", "capped")
	capped.Xattrs = map[string][]byte{xattrCap: hugeCap}
	alien := file("t/z", "alien")
	alien.UID, alien.GID = 4000000000, 4000000001
	manifest(t, repo, "evil",
		dir("."),
		dir("other"),
		file("other/x", "other"),
		dir("t"),
		file("t/.cove-restore-1", "looks like a temporary"),
		symlink("t/a", s.outside),
		file("t/a/pwned", "through an absolute symlink"),
		symlink("t/b", "/"),
		file("t/b/"+s.rootName, "at the host's root"),
		symlink("t/c", "../outside"),
		dir("t/c/x"),
		file("t/c/x/y", "through a relative symlink"),
		hardlink("t/d", "t/a/canary"),
		hardlink("t/e", "other/x"),
		hardlink("t/f", "t/g"),
		file("t/g", "g"),
		file("t/h", "h"),
		file("t/h/i", "below a file"),
		file("t/j/k", "no parent"),
		hardlink("t/l", "t/x"),
		backuprepo.Entry{Path: "t/w", Type: backuprepo.TypeWhiteout},
		redirect,
		capped,
		alien,
	)
	res, err := Restore(context.Background(), repo, "evil", []Source{{Name: "t", Dir: s.target}}, RestoreOptions{Map: mapB, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.untouched(t)
	want := []string{"t/a/pwned", "t/b/" + s.rootName, "t/c/x", "t/c/x/y", "t/d", "t/e", "t/f", "t/h/i", "t/j/k", "t/l", "t/w"}
	if got := failedPaths(res); !slices.Equal(got, want) {
		t.Errorf("failed %q, want %q", got, want)
	}
	for _, f := range res.Failed {
		if f.Err == nil || f.Err.Error() == "" {
			t.Errorf("%s: no reason", f.Path)
		}
	}
	if !slices.Equal(res.Ignored, []string{"other"}) { // "." is no tree
		t.Errorf("ignored %q", res.Ignored)
	}
	ents, err := os.ReadDir(s.target)
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if wantNames := []string{".cove-restore-1", "a", "b", "c", "g", "h", "x", "y", "z"}; !slices.Equal(names, wantNames) {
		t.Errorf("target holds %q, want %q", names, wantNames)
	}
	// No trusted.* attribute nor security label was set, the out-of-range
	// capability neither.
	buf := make([]byte, 256)
	for p, name := range map[string]string{"x": "trusted.overlay.redirect", "x/": "trusted.foo", "x/.": "security.evil", "y": xattrCap} {
		if _, err := unix.Lgetxattr(filepath.Join(s.target, p), name, buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%s: %s set (%v)", p, name, err)
		}
	}
	if n, err := unix.Lgetxattr(filepath.Join(s.target, "x"), "user.ok", buf); err != nil || string(buf[:n]) != "1" {
		t.Errorf("user.ok: %q %v", buf[:n], err)
	}
	// An owner beyond the range is the range's overflow id.
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(s.target, "z"), &st))
	if st.Uid != mapB.HostUID+OverflowID || st.Gid != mapB.HostGID+OverflowID || res.Overflow != 1 {
		t.Errorf("z owned by %d:%d (overflow %d)", st.Uid, st.Gid, res.Overflow)
	}
	if got, err := os.ReadFile(filepath.Join(s.target, ".cove-restore-1")); err != nil || string(got) != "looks like a temporary" {
		t.Errorf(".cove-restore-1: %q %v", got, err)
	}
}

// TestHostileRoot restores a backup whose tree is a symlink to the host's
// root with files below it.
func TestHostileRoot(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	s := newSandbox(t)
	manifest(t, repo, "evil", symlink("t", "/"), dir("t/"+s.rootName), file("t/"+s.rootName+"/passwd", "root::0:0::/:/bin/sh\n"))
	res, err := Restore(context.Background(), repo, "evil", []Source{{Name: "t", Dir: s.target}}, RestoreOptions{Map: mapB})
	if err != nil {
		t.Fatal(err)
	}
	s.untouched(t)
	if got := failedPaths(res); !slices.Equal(got, []string{"t", "t/" + s.rootName, "t/" + s.rootName + "/passwd"}) {
		t.Errorf("failed %q", got)
	}
	if ents, _ := os.ReadDir(s.target); len(ents) != 0 {
		t.Errorf("target holds %v", ents)
	}
}

// TestManifestWriterRefuses: entries no manifest can hold never reach a
// restore (the writer refuses them, and so does the reader).
func TestManifestWriterRefuses(t *testing.T) {
	repo, _ := newRepo(t)
	ctx := context.Background()
	for _, e := range []backuprepo.Entry{
		{Path: ".", Type: backuprepo.TypeFile},
		{Path: "../x", Type: backuprepo.TypeFile},
		{Path: "/etc/passwd", Type: backuprepo.TypeFile},
		{Path: "t/../../x", Type: backuprepo.TypeDir},
		{Path: "t/h", Type: backuprepo.TypeHardlink, Target: "../x"},
		{Path: "t/h", Type: backuprepo.TypeHardlink, Target: "/etc/shadow"},
		{Path: "t/f", Type: backuprepo.TypeFile, Size: 1 << 50},
		{Path: "t/f", Type: backuprepo.TypeFile, Mode: 0o10777},
	} {
		w, err := repo.NewWriter(ctx, "refused", testMeta())
		must(t, err)
		if err := w.Add(ctx, e); err == nil {
			t.Errorf("%+v accepted", e)
		}
	}
	_ = bytes.MinRead
}
