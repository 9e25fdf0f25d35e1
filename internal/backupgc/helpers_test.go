package backupgc

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
)

func newStore(t *testing.T) blob.Store {
	t.Helper()
	s, err := localblob.New(filepath.Join(t.TempDir(), "blobs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newKey(t *testing.T) (*backuprepo.Key, []byte) {
	t.Helper()
	raw, err := backuprepo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := backuprepo.ParseKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k, raw
}

// content returns n pseudo-random bytes (incompressible, one chunk when
// small) from seed.
func content(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, ^seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// file is a file of a test backup: its path and the seed of its content.
type file struct {
	path string
	seed uint64
}

const fileSize = 64 << 10 // one chunk per file

// startBackup opens a writer of backup name and adds the files (in walk
// order), without committing.
func startBackup(t *testing.T, repo *backuprepo.Repo, name string, files ...file) *backuprepo.Writer {
	t.Helper()
	ctx := context.Background()
	w, err := repo.NewWriter(ctx, name, backuprepo.Metadata{Time: time.Now(), Trigger: "manual"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ctx, backuprepo.Entry{Path: ".", Type: backuprepo.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := w.AddFile(ctx, backuprepo.Entry{Path: f.path, Mode: 0o644}, bytes.NewReader(content(f.seed, fileSize))); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// backup writes and commits backup name.
func backup(t *testing.T, repo *backuprepo.Repo, name string, files ...file) {
	t.Helper()
	if _, err := startBackup(t, repo, name, files...).CommitGCSafe(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// chunkOf returns the chunk key of a file's content.
func chunkOf(repo *backuprepo.Repo, seed uint64) string {
	return backuprepo.ChunkKey(repo.ChunkIDOf(content(seed, fileSize)))
}

func exists(t *testing.T, s blob.Store, key string) bool {
	t.Helper()
	_, err := s.Stat(context.Background(), key)
	if err != nil && !blob.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func countKeys(t *testing.T, s blob.Store, prefix string) int {
	t.Helper()
	n := 0
	for _, err := range s.List(context.Background(), prefix) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// complete checks that backup name restores whole, every chunk read back.
func complete(t *testing.T, repo *backuprepo.Repo, name string) {
	t.Helper()
	rep, err := repo.Check(context.Background(), name, true)
	if err != nil {
		t.Fatalf("check %s: %v", name, err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("backup %s damaged: %v", name, err)
	}
}

// clock is a collector's clock that a test moves. Objects are stamped
// with the real time, so the clock starts at the real time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func collector(s blob.Store, c *clock, keys ...*backuprepo.Key) *Collector {
	return NewCollector(s, keys, Options{Grace: time.Hour, Now: c.Now})
}

func run(t *testing.T, c *Collector) Stats {
	t.Helper()
	st, err := c.Run(context.Background())
	if err != nil {
		t.Fatalf("gc run: %v", err)
	}
	return st
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func files(prefix string, seeds ...uint64) []file {
	out := make([]file, len(seeds))
	for i, s := range seeds {
		out[i] = file{path: fmt.Sprintf("%s%02d", prefix, i), seed: s}
	}
	return out
}

// unpackedRepo returns a repository whose writers store each chunk as an
// object of its own (as cove did before packs): the tests of collecting
// such chunks, which older repositories hold.
func unpackedRepo(s blob.Store, k *backuprepo.Key) *backuprepo.Repo {
	r := backuprepo.New(s, k, nil)
	r.SetPacks(false)
	return r
}
