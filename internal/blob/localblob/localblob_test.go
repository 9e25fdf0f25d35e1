package localblob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/blobtest"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/testutil"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(filepath.Join(t.TempDir(), "blobs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return newStore(t) }, blobtest.Options{LargeSize: 3 << 20})
}

// The store as backups open it (no fsync per object) keeps every promise
// of a Store, and Sync makes its objects durable.
func TestConformanceBatchedSync(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := New(filepath.Join(t.TempDir(), "blobs"), nil, BatchedSync("test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, blobtest.Options{LargeSize: 3 << 20})
}

// Where unnamed files cannot be linked (no O_TMPFILE, no /proc), every
// Put writes a temporary file in .tmp and renames it: the store keeps
// every promise that way too.
func TestConformanceNamedTemporaries(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			blobtest.Run(t, func(t *testing.T) blob.Store {
				var opts []Option
				if batched {
					opts = append(opts, BatchedSync("test"))
				}
				s, err := New(filepath.Join(t.TempDir(), "blobs"), nil, opts...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				if !s.unnamed {
					t.Fatal("this host's file system has no O_TMPFILE: the default path is the one under test elsewhere")
				}
				s.unnamed = false
				return s
			}, blobtest.Options{LargeSize: 3 << 20})
		})
	}
}

// Put keeps the directories it writes into open: one removed behind the
// store's back (by an operator) is made again, and the next Put into it
// lands there.
func TestPutAfterItsDirectoryWasRemoved(t *testing.T) {
	for _, unnamed := range []bool{true, false} {
		t.Run(fmt.Sprintf("unnamed=%v", unnamed), func(t *testing.T) {
			s := newStore(t)
			s.unnamed = unnamed
			putAfterRemoval(t, s)
		})
	}
}

func putAfterRemoval(t *testing.T, s *Store) {
	blobtest.Put(t, s, "chunks/ab/one", []byte("1"))
	if err := os.RemoveAll(filepath.Join(s.dir, "chunks")); err != nil {
		t.Fatal(err)
	}
	blobtest.Put(t, s, "chunks/ab/two", []byte("2"))
	if got := blobtest.Read(t, s, "chunks/ab/two", blob.Range{}); string(got) != "2" {
		t.Fatalf("chunks/ab/two = %q", got)
	}
	if got := blobtest.Keys(t, s, ""); !slices.Equal(got, []string{"chunks/ab/two"}) {
		t.Fatalf("keys %q", got)
	}
	if got := tmpFiles(t, s); len(got) != 0 {
		t.Errorf("temporary files left: %q", got)
	}
}

func TestSync(t *testing.T) {
	ctx := context.Background()
	s, err := New(filepath.Join(t.TempDir(), "blobs"), nil, BatchedSync("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	blobtest.Put(t, s, "a/b", []byte("content"))
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := blobtest.Read(t, s, "a/b", blob.Range{}); string(got) != "content" {
		t.Errorf("after Sync: %q", got)
	}
	if len(tmpFiles(t, s)) != 0 {
		t.Errorf("temporary files left: %v", tmpFiles(t, s))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Sync(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Sync with a cancelled context: %v", err)
	}
}

// tmpFiles lists the temporary files of Puts in progress.
func tmpFiles(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.dir, tmpDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Failed Puts leave no temporary file behind.
func TestFailedPutsLeaveNoTemporaryFile(t *testing.T) {
	s := newStore(t)
	ctx := testutil.Context(t)
	if err := s.Put(ctx, "k", bytes.NewReader(make([]byte, 10)), 11); !errors.Is(err, blob.ErrSizeMismatch) {
		t.Fatalf("put: %v", err)
	}
	blobtest.Put(t, s, "a", []byte("file"))
	// "a" is an object, so "a/b" cannot be one.
	err := s.Put(ctx, "a/b", bytes.NewReader([]byte("x")), 1)
	if !errdefs.Is(err, errdefs.CategoryFailedPrecondition) {
		t.Errorf("put a/b over the object a: %v; want failed precondition", err)
	}
	if got := tmpFiles(t, s); len(got) != 0 {
		t.Errorf("temporary files left: %q", got)
	}
}

// An attacker who can write into the blob directory plants symlinks to
// files and directories outside it: no operation reads, lists, writes or
// removes anything outside.
func TestPlantedSymlinksStayInside(t *testing.T) {
	s := newStore(t)
	ctx := testutil.Context(t)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("outside secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"file": secret,            // absolute, to a file
		"dir":  outside,           // absolute, to a directory
		"rel":  "../../" + secret, // relative, climbing out
		"up":   "..",
	} {
		if err := os.Symlink(target, filepath.Join(s.dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"file", "dir/secret", "rel", "up/secret"} {
		rc, err := s.Get(ctx, key, blob.Range{})
		if err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("get %s through a planted symlink read %q", key, b)
			continue
		}
		if !errdefs.Is(err, errdefs.CategoryPermissionDenied) {
			t.Errorf("get %s through a planted symlink: %v; want permission denied", key, err)
		}
		if info, err := s.Stat(ctx, key); err == nil {
			t.Errorf("stat %s through a planted symlink = %+v", key, info)
		}
	}
	// Writes through a directory symlink are refused; a Put over a file
	// symlink replaces the link, not its target.
	if err := s.Put(ctx, "dir/new", bytes.NewReader([]byte("x")), 1); err == nil {
		t.Error("put dir/new through a symlink to a directory outside succeeded")
	}
	if err := s.Delete(ctx, "dir/secret"); err == nil {
		if _, err := os.Stat(secret); err != nil {
			t.Errorf("delete through a symlink removed the file outside: %v", err)
		}
	}
	blobtest.Put(t, s, "file", []byte("replaced"))
	if got := blobtest.Read(t, s, "file", blob.Range{}); string(got) != "replaced" {
		t.Errorf("file = %q", got)
	}
	if err := s.Delete(ctx, "rel"); err != nil {
		t.Errorf("delete of the link rel: %v", err)
	}
	if got := blobtest.Keys(t, s, ""); !slices.Equal(got, []string{"file"}) {
		t.Errorf("listing = %q; want only the object written (symlinks are not listed)", got)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "outside secret" {
		t.Errorf("the file outside changed: %q, %v", b, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("files outside: %d, want 1 (nothing written there)", len(entries))
	}
}

// New removes the temporary files of Puts a crash interrupted, once they
// are old enough not to belong to a Put in progress.
func TestNewRemovesStaleTemporaryFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	old, fresh := filepath.Join(dir, tmpDir, "old"), filepath.Join(dir, tmpDir, "fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * staleTmp)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	s = newStoreAt(t, dir)
	if got := tmpFiles(t, s); !slices.Equal(got, []string{"fresh"}) {
		t.Errorf("temporary files = %q; want only fresh", got)
	}
}

func newStoreAt(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A full disk fails the Put with ResourceExhausted, leaves no partial
// object and no temporary file, and the store works again once there is
// room.
func TestDiskFull(t *testing.T) {
	testutil.RequireRoot(t, "to mount a small tmpfs")
	dir := t.TempDir()
	const size = 1 << 20
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	s := newStoreAt(t, dir)
	blobtest.Put(t, s, "small", []byte("fits"))
	ctx := testutil.Context(t)
	err := s.Put(ctx, "big", bytes.NewReader(make([]byte, 2*size)), 2*size)
	if !errdefs.Is(err, errdefs.CategoryResourceExhausted) || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("put of more than the disk holds: %v; want resource exhausted (ENOSPC)", err)
	}
	t.Logf("error: %v", err)
	blobtest.MustBeMissing(t, s, "big")
	if got := tmpFiles(t, s); len(got) != 0 {
		t.Errorf("temporary files left: %q", got)
	}
	if got := blobtest.Read(t, s, "small", blob.Range{}); string(got) != "fits" {
		t.Errorf("small = %q", got)
	}
	blobtest.Put(t, s, "after", []byte("room again"))
}

// The directory is created private.
func TestNewCreatesPrivateDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "blobs")
	newStoreAt(t, dir)
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("mode %v; want no access for group and others", perm)
	}
}

// TestGetLeavesAccessTimes: reading an object does not update its access
// time (relatime would, for an object not read since it was written or
// for a day): a restore reads every chunk of a backup, and would otherwise
// dirty as many inodes of the store.
func TestGetLeavesAccessTimes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs to own the objects or CAP_FOWNER: run as root")
	}
	s := newStore(t)
	if err := s.Put(context.Background(), "chunks/ab/x", strings.NewReader("content"), 7); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.dir, "chunks", "ab", "x")
	old := time.Now().Add(-72 * time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	if got := blobtest.Read(t, s, "chunks/ab/x", blob.Range{}); string(got) != "content" {
		t.Fatalf("read %q", got)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(st.Atim.Unix()); !at.Equal(old) {
		t.Errorf("access time %v after a read, want it left at %v", at, old)
	}
	if s.atimeNeeded.Load() {
		t.Error("the owner of the objects fell back to reads that update access times")
	}
}
