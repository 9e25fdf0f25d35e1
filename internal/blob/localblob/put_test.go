package localblob

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/blobtest"
	"github.com/covedev/cove/internal/testutil"
)

// bothPaths runs f on a store that links unnamed files and on one that
// renames named temporaries (hosts without O_TMPFILE).
func bothPaths(t *testing.T, f func(t *testing.T, s *Store)) {
	for _, unnamed := range []bool{true, false} {
		t.Run(fmt.Sprintf("unnamed=%v", unnamed), func(t *testing.T) {
			s := newStore(t)
			if unnamed && !s.unnamed {
				t.Skip("this host's file system cannot link unnamed files")
			}
			s.unnamed = unnamed
			f(t, s)
		})
	}
}

// onRead calls f once, when the Put has read half of data.
type onRead struct {
	r    io.Reader
	n, k int
	f    func()
}

func (o *onRead) Read(p []byte) (int, error) {
	if o.f != nil && o.n >= o.k {
		o.f()
		o.f = nil
	}
	m, err := o.r.Read(p[:min(len(p), 1024)])
	o.n += m
	return m, err
}

// An attacker who can write in the store moves a directory objects go to
// out of it and puts a symlink to it in its place, before a Put or while
// one writes: nothing is written outside, and no Put reports success for
// an object that cannot be read under its key (review S11-1).
func TestPutIntoAMovedDirectoryStaysInside(t *testing.T) {
	bothPaths(t, func(t *testing.T, s *Store) {
		ctx := testutil.Context(t)
		outside := filepath.Join(t.TempDir(), "outside")
		blobtest.Put(t, s, "chunks/ab/one", []byte("1"))
		move := func() {
			if err := os.Rename(filepath.Join(s.dir, "chunks/ab"), outside); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(outside, filepath.Join(s.dir, "chunks/ab")); err != nil {
				t.Error(err)
			}
		}
		check := func(key string, err error) {
			t.Helper()
			if err == nil {
				if got := blobtest.Read(t, s, key, blob.Range{}); len(got) == 0 {
					t.Errorf("put %s succeeded, but the key reads %q", key, got)
				}
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 1 {
				t.Errorf("files in the directory moved outside: %d, want 1 (nothing written there): put: %v", len(entries), err)
			}
		}
		// Moved before the Put.
		move()
		check("chunks/ab/two", s.Put(ctx, "chunks/ab/two", bytes.NewReader([]byte("2")), 1))

		// Moved while the Put writes.
		os.Remove(filepath.Join(s.dir, "chunks/ab"))
		os.RemoveAll(outside)
		blobtest.Put(t, s, "chunks/ab/one", []byte("1"))
		data := bytes.Repeat([]byte("3"), 64<<10)
		err := s.Put(ctx, "chunks/ab/three", &onRead{r: bytes.NewReader(data), k: len(data) / 2, f: move}, int64(len(data)))
		check("chunks/ab/three", err)
		if got := tmpFiles(t, s); len(got) != 0 {
			t.Errorf("temporary files left: %q", got)
		}
	})
}

// A directory renamed within the store while a Put writes: the object
// lands under its own key.
func TestPutLandsUnderItsKeyAfterARename(t *testing.T) {
	bothPaths(t, func(t *testing.T, s *Store) {
		ctx := testutil.Context(t)
		blobtest.Put(t, s, "a/x/one", []byte("1"))
		data := bytes.Repeat([]byte("2"), 64<<10)
		rename := func() {
			if err := os.Rename(filepath.Join(s.dir, "a/x"), filepath.Join(s.dir, "a/y")); err != nil {
				t.Error(err)
			}
		}
		if err := s.Put(ctx, "a/x/two", &onRead{r: bytes.NewReader(data), k: len(data) / 2, f: rename}, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if got := blobtest.Read(t, s, "a/x/two", blob.Range{}); !bytes.Equal(got, data) {
			t.Errorf("a/x/two: %d bytes", len(got))
		}
		blobtest.MustBeMissing(t, s, "a/y/two")
	})
}

// A Put whose directory is removed while it writes makes it again.
func TestPutAfterItsDirectoryWasRemovedMidway(t *testing.T) {
	bothPaths(t, func(t *testing.T, s *Store) {
		ctx := testutil.Context(t)
		blobtest.Put(t, s, "chunks/ab/one", []byte("1"))
		data := bytes.Repeat([]byte("2"), 64<<10)
		remove := func() {
			if err := os.RemoveAll(filepath.Join(s.dir, "chunks")); err != nil {
				t.Error(err)
			}
		}
		if err := s.Put(ctx, "chunks/ab/two", &onRead{r: bytes.NewReader(data), k: len(data) / 2, f: remove}, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if got := blobtest.Read(t, s, "chunks/ab/two", blob.Range{}); !bytes.Equal(got, data) {
			t.Errorf("chunks/ab/two: %d bytes", len(got))
		}
	})
}

// Closing a store twice closes nothing else; a Put after Close fails.
func TestCloseTwice(t *testing.T) {
	s, err := New(filepath.Join(t.TempDir(), "blobs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	other, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0) // may take a number the store had
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	s.Close()
	var st unix.Stat_t
	if err := unix.Fstat(other, &st); err != nil {
		t.Fatalf("the second Close closed an unrelated descriptor: %v", err)
	}
	if err := s.Put(testutil.Context(t), "k", bytes.NewReader([]byte("x")), 1); err == nil {
		t.Error("put after Close succeeded")
	}
}
