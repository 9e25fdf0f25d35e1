package backupfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/errdefs"
	"golang.org/x/sys/unix"
)

func setReadWorkers(t *testing.T, n int) {
	t.Helper()
	orig := readWorkers
	readWorkers = n
	t.Cleanup(func() { readWorkers = orig })
}

func setAfterRead(t *testing.T, f func(rel string)) {
	t.Helper()
	orig := afterRead
	afterRead = f
	t.Cleanup(func() { afterRead = orig })
}

// entryPaths lists a backup's entries in manifest order.
func entryPaths(t *testing.T, repo *backuprepo.Repo, name string) []string {
	t.Helper()
	m, err := repo.OpenManifest(context.Background(), name)
	must(t, err)
	var out []string
	for {
		e, err := m.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		out = append(out, e.Path)
	}
}

// TestReadAheadKeepsWalkOrder: files read at once finish out of order (the
// first one is held until the fourth was read: without reading ahead the
// backup could not finish), yet entries are added in walk order, each with
// its own content, the directories and links among them in place.
func TestReadAheadKeepsWalkOrder(t *testing.T) {
	requireRoot(t)
	setReadWorkers(t, 4)
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	want := map[string][]byte{}
	for i, n := range []string{"a", "b", "c", "d", "e/f", "e/g", "h"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(src, n)), 0o755))
		data := randomBytes(uint64(i+1), 1000+i*300<<10) // up to 1.8 MiB: several chunks
		writeFile(t, filepath.Join(src, n), data, 0o644, uid, gid)
		want["ws/"+n] = data
	}
	must(t, os.Symlink("a", filepath.Join(src, "c-link")))
	must(t, os.Link(filepath.Join(src, "b"), filepath.Join(src, "e/b-again")))

	dRead := make(chan struct{})
	setAfterRead(t, func(rel string) {
		switch rel {
		case "d":
			close(dRead)
		case "a":
			select {
			case <-dRead:
			case <-time.After(time.Minute): // a guard, not synchronisation: without workers this never comes
				t.Errorf("%q was not read while %q was being read", "d", "a")
			}
		}
	})
	res := backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: src})
	setAfterRead(t, func(string) {})

	wantOrder := []string{"ws", "ws/a", "ws/b", "ws/c", "ws/c-link", "ws/d", "ws/e", "ws/e/b-again", "ws/e/f", "ws/e/g", "ws/h"}
	if got := entryPaths(t, repo, "b1"); !slices.Equal(got, wantOrder) {
		t.Errorf("entries %q, want %q", got, wantOrder)
	}
	got := storedContents(t, repo, "b1")
	for p, w := range want {
		if !bytes.Equal(got[p], w) {
			t.Errorf("%s: %d bytes stored, want %d", p, len(got[p]), len(w))
		}
	}
	if res.Files != int64(len(want)) || res.Read != int64(len(want)) {
		t.Errorf("files %d, read %d, want %d", res.Files, res.Read, len(want))
	}
	// The second name of b is a link to the first, not a copy.
	m, err := repo.OpenManifest(context.Background(), "b1")
	must(t, err)
	for {
		e, err := m.Next()
		must(t, err)
		if e.Path == "ws/e/b-again" {
			if e.Type != backuprepo.TypeHardlink || e.Target != "ws/b" {
				t.Errorf("ws/e/b-again: type %v target %q, want a hard link to ws/b", e.Type, e.Target)
			}
			break
		}
	}
}

// TestReadAheadSwapAfterOpen: a file is swapped for a symlink to a host
// secret after the walk opened it and before a worker reads it (and its
// name swapped again while it is read). The worker reads the descriptor
// the walk opened: the secret never reaches the backup; the name holds
// what the file held.
func TestReadAheadSwapAfterOpen(t *testing.T) {
	requireRoot(t)
	setReadWorkers(t, 4)
	repo, _ := newRepo(t)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "shadow")
	secretContent := []byte("root:$6$host-secret-hash:19000:0:99999:7:::\n")
	must(t, os.WriteFile(secret, secretContent, 0o600))
	src := emptyDir(t, "src")
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	for _, n := range []string{"after-open", "while-read", "quiet"} {
		writeFile(t, filepath.Join(src, n), []byte("own content of "+n), 0o644, uid, gid)
	}
	swap := func(name string) {
		p := filepath.Join(src, name)
		must(t, os.Remove(p))
		must(t, os.Symlink(secret, p))
	}
	orig := openFile
	openFile = func(e *confine.Entry) (*os.File, error) {
		f, err := orig(e)
		if err == nil && e.Rel == "after-open" {
			swap(e.Rel)
		}
		return f, err
	}
	t.Cleanup(func() { openFile = orig })
	setAfterRead(t, func(rel string) {
		if rel == "while-read" {
			if fi, err := os.Lstat(filepath.Join(src, rel)); err == nil && fi.Mode().IsRegular() {
				swap(rel)
			}
		}
	})
	backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: src})

	got := storedContents(t, repo, "b1")
	for p, c := range got {
		if bytes.Contains(c, []byte("host-secret")) {
			t.Errorf("%s: the host's secret was backed up", p)
		}
	}
	for _, n := range []string{"after-open", "while-read", "quiet"} {
		if string(got["ws/"+n]) != "own content of "+n {
			t.Errorf("ws/%s stored %q, want its own content", n, got["ws/"+n])
		}
	}
}

// failingStore refuses to store one object, and holds the put of another
// until its context is done.
type failingStore struct {
	blob.Store
	key, hold string
	// holding counts puts being held; Backup must not return before they
	// have returned.
	holding atomic.Int32
}

var errRefused = errors.New("the store refuses this object")

func (s *failingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	switch key {
	case s.key:
		return errRefused
	case s.hold:
		s.holding.Add(1)
		defer s.holding.Add(-1)
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Store.Put(ctx, key, r, size)
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents)
}

// backupGoroutines lists the goroutines still running backup code, once
// those ending have had the chance to (Backup waited for them: they are
// at most returning from their last call).
func backupGoroutines() []string {
	var left []string
	for range 10000 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		left = left[:0]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "internal/backupfs.(*backuper)") || strings.Contains(g, "internal/backuprepo.(*Writer)") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return nil
		}
		runtime.Gosched()
	}
	return left
}

// TestReadAheadWorkerErrorFails: the store refuses the chunk of one file
// in the middle of many read at once, while the upload of an earlier one
// hangs (until cancelled). The backup fails with the store's error, writes
// no manifest, and leaves no worker or upload running and no file open
// when it returns.
func TestReadAheadWorkerErrorFails(t *testing.T) {
	requireRoot(t)
	setReadWorkers(t, 4)
	dir := filepath.Join(t.TempDir(), "blobs")
	ls, err := localblob.New(dir, nil)
	must(t, err)
	t.Cleanup(func() { ls.Close() })
	k, err := backuprepo.ParseKey(bytes.Repeat([]byte{7}, backuprepo.KeySize))
	must(t, err)
	fs := &failingStore{Store: ls}
	repo := backuprepo.New(fs, k, nil)
	repo.SetPacks(false) // chunks as objects of their own: one is held, another refused
	src := emptyDir(t, "src")
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	for i := range 200 {
		data := randomBytes(uint64(i+1), 4096+i*997)
		id := repo.ChunkIDOf(data).String()
		switch i {
		case 60:
			fs.hold = "chunks/" + id[:2] + "/" + id
		case 100:
			fs.key = "chunks/" + id[:2] + "/" + id
		}
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%03d", i)), data, 0o644, uid, gid)
	}
	if backupGoroutines() != nil {
		t.Fatal("backup goroutines running before the test")
	}
	fds := openFDs(t)
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, "b1", testMeta())
	must(t, err)
	_, err = Backup(ctx, w, []Source{{Name: "ws", Dir: src}}, BackupOptions{Map: mapA, Log: testLog(t)})
	if !errors.Is(err, errRefused) {
		t.Fatalf("backup with a refused chunk: %v; want the store's error", err)
	}
	if n := fs.holding.Load(); n != 0 {
		t.Errorf("Backup returned with %d uploads still running", n)
	}
	if left := backupGoroutines(); left != nil {
		t.Errorf("%d goroutines left running backup code:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	if n := openFDs(t); n > fds {
		t.Errorf("%d descriptors open after the backup, %d before", n, fds)
	}
	if _, err := repo.OpenManifest(ctx, "b1"); !errdefs.Is(err, errdefs.CategoryNotFound) {
		t.Errorf("a failed backup has a manifest: %v", err)
	}
	// Nothing is left half done: the same tree backs up once the store
	// takes the chunk.
	fs.key, fs.hold = "", ""
	w, err = repo.NewWriter(ctx, "b2", testMeta())
	must(t, err)
	if _, err := Backup(ctx, w, []Source{{Name: "ws", Dir: src}}, BackupOptions{Map: mapA, Log: testLog(t)}); err != nil {
		t.Fatalf("backup after the store recovered: %v", err)
	}
	if got := storedContents(t, repo, "b2"); len(got) != 200 {
		t.Errorf("%d files stored, want 200", len(got))
	}
}

// TestReadAheadOneWorker: with a single reader (readWorkers 1) the backup
// is the same as with several.
func TestReadAheadOneWorker(t *testing.T) {
	requireRoot(t)
	src := emptyDir(t, "src")
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	for i := range 20 {
		p := filepath.Join(src, fmt.Sprintf("d%d/f%d", i%3, i))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		writeFile(t, p, randomBytes(uint64(i+7), 100+i*50000), 0o640, uid, gid)
	}
	var trees [2]map[string][]byte
	for i, n := range []int{1, 4} {
		setReadWorkers(t, n)
		repo, _ := newRepo(t)
		backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
		trees[i] = storedContents(t, repo, "b")
	}
	if len(trees[0]) != 20 || len(trees[0]) != len(trees[1]) {
		t.Fatalf("%d and %d files", len(trees[0]), len(trees[1]))
	}
	for p, c := range trees[0] {
		if !bytes.Equal(c, trees[1][p]) {
			t.Errorf("%s differs between one and four readers", p)
		}
	}
}

// TestReadAheadBoundedInBytes (review REV-S8-8): while the first file's
// read is held, the files after it wait in the queue; files with large
// extended attributes stop the walk once the queue holds maxAheadBytes,
// long before maxAhead entries, and the backup is whole once the read
// goes on.
func TestReadAheadBoundedInBytes(t *testing.T) {
	requireRoot(t)
	setReadWorkers(t, 4)
	origBytes := maxAheadBytes
	maxAheadBytes = 64 << 10
	t.Cleanup(func() { maxAheadBytes = origBytes; aheadQueued = nil })
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	writeFile(t, filepath.Join(src, "0-first"), randomBytes(1, 64<<10), 0o644, uid, gid)
	value := bytes.Repeat([]byte("x"), 2000)
	const n = 200 // 200 × 2 KB of attributes: six times the bound
	for i := range n {
		p := filepath.Join(src, fmt.Sprintf("f%03d", i))
		writeFile(t, p, []byte(fmt.Sprint(i)), 0o644, uid, gid)
		if err := unix.Setxattr(p, "user.big", value, 0); err != nil {
			t.Skipf("no user.* attributes here: %v", err)
		}
	}
	full := make(chan struct{})
	var maxBytes, largest atomic.Int64
	var once atomic.Bool
	aheadQueued = func(entries, b int) {
		if int64(b) > maxBytes.Load() {
			maxBytes.Store(int64(b))
		}
		if b >= maxAheadBytes && once.CompareAndSwap(false, true) {
			close(full)
		}
	}
	setAfterRead(t, func(rel string) {
		if rel == "0-first" {
			select {
			case <-full:
			case <-time.After(time.Minute): // a guard: the queue fills while this read is held
				t.Error("the queue never reached its byte bound while the first read was held")
			}
		}
	})
	largest.Store(int64(entryBytes(&backuprepo.Entry{Path: "ws/f000", Xattrs: map[string][]byte{"user.big": value}})))
	res := backup(t, repo, "b1", "", mapA, Source{Name: "ws", Dir: src})
	setAfterRead(t, func(string) {})
	if limit := int64(maxAheadBytes) + largest.Load(); maxBytes.Load() > limit {
		t.Errorf("the queue held %d bytes, more than the bound %d and one entry", maxBytes.Load(), limit)
	}
	if res.Files != n+1 {
		t.Errorf("%d files backed up, want %d", res.Files, n+1)
	}
	if got := storedContents(t, repo, "b1"); !bytes.Equal(got["ws/f199"], []byte("199")) {
		t.Errorf("ws/f199 stored as %q", got["ws/f199"])
	}
}

// TestAheadCountsPreviousEntries: unchanged files waiting behind a file
// being read hold their previous entries, chunk lists and all; those
// count in maxAheadBytes, so a tree of huge sparse files (a chunk
// reference per 4 MiB of holes) behind a slow read does not fill the
// backup child's memory (review S10-1).
func TestAheadCountsPreviousEntries(t *testing.T) {
	requireRoot(t)
	setReadWorkers(t, 1)
	old := maxAheadBytes
	maxAheadBytes = 4 << 20
	t.Cleanup(func() { maxAheadBytes = old })
	repo, _ := newRepo(t)
	src := emptyDir(t, "src")
	uid, gid := int(mapA.HostUID), int(mapA.HostGID)
	writeFile(t, filepath.Join(src, "a"), randomBytes(1, 1000), 0o644, uid, gid)
	const n, size = 100, 16 << 30 // each 4,096 zero chunk references
	for i := range n {
		p := filepath.Join(src, fmt.Sprintf("b%04d", i))
		writeFile(t, p, nil, 0o644, uid, gid)
		must(t, os.Truncate(p, size))
	}
	backup(t, repo, "one", "", mapA, Source{Name: "ws", Dir: src})
	writeFile(t, filepath.Join(src, "a"), randomBytes(2, 1000), 0o644, uid, gid)

	// "a" is held until the queue is full (by bytes) or holds everything.
	release := make(chan struct{})
	var released atomic.Bool
	var maxEntries, maxBytes int
	orig := aheadQueued
	aheadQueued = func(e, b int) {
		maxEntries, maxBytes = max(maxEntries, e), max(maxBytes, b)
		if (e == n+1 || b >= maxAheadBytes) && released.CompareAndSwap(false, true) {
			close(release)
		}
	}
	t.Cleanup(func() { aheadQueued = orig })
	setAfterRead(t, func(rel string) {
		if rel == "a" {
			<-release
		}
	})
	backup(t, repo, "two", "one", mapA, Source{Name: "ws", Dir: src})
	held := 48 * (size / backuprepo.MaxChunkSize) // what each queued entry's previous chunk list takes, about
	if most := maxAheadBytes/held + 2; maxEntries > most {
		t.Errorf("%d entries queued behind a read (%d bytes counted): their previous chunk lists (%d bytes each) are not counted against %d bytes", maxEntries, maxBytes, held, maxAheadBytes)
	}
}
