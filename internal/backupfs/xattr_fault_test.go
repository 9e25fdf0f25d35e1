package backupfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/confine"
)

// storedXattrs returns every entry's attributes in backup name.
func storedXattrs(t *testing.T, repo *backuprepo.Repo, name string) map[string]map[string][]byte {
	t.Helper()
	m, err := repo.OpenManifest(context.Background(), name)
	must(t, err)
	out := map[string]map[string][]byte{}
	for {
		e, err := m.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		out[e.Path] = e.Xattrs
	}
}

// valueReads records the attribute values Backup reads; before, if not
// nil, runs before each read.
type valueReads struct {
	mu    sync.Mutex
	calls int
	bytes int
}

func (r *valueReads) install(t *testing.T, before func(ce *confine.Entry, name string)) {
	t.Helper()
	orig := readXattr
	readXattr = func(ce *confine.Entry, name string, max int) ([]byte, error) {
		if before != nil {
			before(ce, name)
		}
		v, err := orig(ce, name, max)
		r.mu.Lock()
		r.calls++
		r.bytes += len(v)
		r.mu.Unlock()
		return v, err
	}
	t.Cleanup(func() { readXattr = orig })
}

// TestXattrRemovedWhileRead (review REV-9): a workload removes one of a
// file's attributes between the listing and the read (really, with
// removexattr, so the kernel answers ENODATA). The backup does not fail:
// the attribute is left out, the file is listed, and the rest of the
// file's attributes and the other files are kept.
func TestXattrRemovedWhileRead(t *testing.T) {
	requireRoot(t)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	for _, n := range []string{"flaky", "other"} {
		p := filepath.Join(src, n)
		writeFile(t, p, []byte(n), 0o644, int(mapA.HostUID), int(mapA.HostGID))
		must(t, unix.Setxattr(p, "user.gone", []byte("soon"), 0))
		must(t, unix.Setxattr(p, "user.keep", []byte("kept"), 0))
	}
	var reads valueReads
	reads.install(t, func(ce *confine.Entry, name string) {
		if ce.Rel == "flaky" && name == "user.gone" {
			must(t, unix.Removexattr(filepath.Join(src, "flaky"), name))
		}
	})
	res := backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: src})
	if !slices.ContainsFunc(res.Skipped, func(s string) bool {
		return strings.HasPrefix(s, "ws/flaky: ") && strings.Contains(s, "user.gone")
	}) {
		t.Errorf("the file whose attribute vanished is not listed: %q", res.Skipped)
	}
	got := storedXattrs(t, repo, "b1")
	if x := got["ws/flaky"]; len(x) != 1 || string(x["user.keep"]) != "kept" {
		t.Errorf("ws/flaky stored with attributes %q, want only user.keep", x)
	}
	if x := got["ws/other"]; len(x) != 2 || string(x["user.gone"]) != "soon" {
		t.Errorf("ws/other stored with attributes %q, want both", x)
	}
	if c := storedContents(t, repo, "b1"); string(c["ws/flaky"]) != "flaky" || string(c["ws/other"]) != "other" {
		t.Errorf("contents %q", c)
	}
}

// TestXattrReadErrorsSkipped: ERANGE (a value growing at every try) and
// E2BIG on one attribute skip that attribute and list the file; an
// unexpected error (EIO) still fails the backup rather than storing a
// silently incomplete one.
func TestXattrReadErrorsSkipped(t *testing.T) {
	requireRoot(t)
	src := emptyDir(t, "src")
	p := filepath.Join(src, "f")
	writeFile(t, p, []byte("f"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	for _, n := range []string{"user.a", "user.b", "user.c"} {
		must(t, unix.Setxattr(p, n, []byte(n), 0))
	}
	orig := readXattr
	t.Cleanup(func() { readXattr = orig })
	fail := map[string]error{"user.a": unix.ERANGE, "user.b": unix.E2BIG}
	readXattr = func(ce *confine.Entry, name string, max int) ([]byte, error) {
		if err := fail[name]; err != nil {
			return nil, fmt.Errorf("%s: get xattr %s: %w", ce.Rel, name, err)
		}
		return orig(ce, name, max)
	}
	repo, _ := newRepo(t)
	res := backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: src})
	if !slices.ContainsFunc(res.Skipped, func(s string) bool { return strings.HasPrefix(s, "ws/f: ") }) {
		t.Errorf("file not listed: %q", res.Skipped)
	}
	// E2BIG is a value beyond what a backup keeps: none of the file's
	// attributes are kept (never an arbitrary part); the file is.
	if x, ok := storedXattrs(t, repo, "b1")["ws/f"]; !ok || len(x) != 0 {
		t.Errorf("ws/f stored %v with attributes %q", ok, x)
	}

	fail = map[string]error{"user.c": unix.EIO}
	w, err := repo.NewWriter(context.Background(), "b2", testMeta())
	must(t, err)
	if _, err := Backup(context.Background(), w, []Source{{Name: "ws", Dir: src}}, BackupOptions{Map: mapA, Log: testLog(t)}); !errors.Is(err, unix.EIO) {
		t.Errorf("backup with an I/O error reading an attribute: %v, want EIO", err)
	}
}

// TestManyLargeXattrsBounded (review REV-9): a file with hundreds of
// 64 KiB user.* attributes (tmpfs keeps them; ext4 would not) costs the
// backup child at most what a backup keeps of one entry: values are read
// only up to backuprepo.MaxXattrs / MaxXattrsTotal, never all of them
// first. The file is stored without attributes and listed; a neighbour's
// attributes are kept.
func TestManyLargeXattrsBounded(t *testing.T) {
	requireRoot(t)
	mnt := emptyDir(t, "tmpfs")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { must(t, unix.Unmount(mnt, unix.MNT_DETACH)) })
	big, small := filepath.Join(mnt, "big"), filepath.Join(mnt, "small")
	writeFile(t, big, []byte("big"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	writeFile(t, small, []byte("small"), 0o644, int(mapA.HostUID), int(mapA.HostGID))
	value := make([]byte, backuprepo.MaxXattrSize)
	n := 0
	for ; n < 4*backuprepo.MaxXattrsTotal/len(value)+2*backuprepo.MaxXattrs; n++ {
		if err := unix.Setxattr(big, fmt.Sprintf("user.a%04d", n), value, 0); err != nil {
			if n == 0 {
				t.Skipf("this kernel's tmpfs keeps no large user.* attribute: %v", err)
			}
			break
		}
	}
	if n*len(value) <= 2*backuprepo.MaxXattrsTotal {
		t.Skipf("tmpfs kept only %d attributes of %d bytes", n, len(value))
	}
	must(t, unix.Setxattr(small, "user.note", []byte("kept"), 0))

	var reads valueReads
	reads.install(t, nil)
	repo, _ := newRepo(t)
	res := backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: mnt})
	if reads.bytes > backuprepo.MaxXattrsTotal+len("kept") || reads.calls > backuprepo.MaxXattrs+2 {
		t.Errorf("read %d attribute values, %d bytes, of a file with %d of %d bytes; want at most %d bytes",
			reads.calls, reads.bytes, n, len(value), backuprepo.MaxXattrsTotal)
	}
	if !slices.ContainsFunc(res.Skipped, func(s string) bool { return strings.HasPrefix(s, "ws/big: ") }) {
		t.Errorf("ws/big not listed: %q", res.Skipped)
	}
	got := storedXattrs(t, repo, "b1")
	if x, ok := got["ws/big"]; !ok || len(x) != 0 {
		t.Errorf("ws/big stored %v with %d attributes", ok, len(x))
	}
	if string(got["ws/small"]["user.note"]) != "kept" {
		t.Errorf("ws/small's attributes %q", got["ws/small"])
	}
}
