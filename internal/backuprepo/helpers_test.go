package backuprepo

import (
	"bytes"
	"context"
	"io"
	"iter"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
)

// testKey returns the key derived from a fixed seed (deterministic chunk
// boundaries) .
func testKey(t testing.TB, seed byte) *Key {
	t.Helper()
	k, err := ParseKey(bytes.Repeat([]byte{seed}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newLocal returns a directory store and its directory.
func newLocal(t testing.TB) (*localblob.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := localblob.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// randomBytes returns n pseudo-random (incompressible) bytes from seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// keys lists the keys under prefix.
func keys(t testing.TB, s blob.Store, prefix string) []string {
	t.Helper()
	var out []string
	for info, err := range s.List(context.Background(), prefix) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, info.Key)
	}
	return out
}

// recordingStore records the order of successful Puts and can fail the
// Put of a chosen key prefix after some successes.
type recordingStore struct {
	blob.Store
	mu       sync.Mutex
	puts     []string
	failPref string
	failAt   int // fail the failAt-th Put under failPref (1-based); 0: never
	seen     int
}

func (r *recordingStore) Put(ctx context.Context, key string, rd io.Reader, size int64) error {
	r.mu.Lock()
	if r.failAt > 0 && strings.HasPrefix(key, r.failPref) {
		r.seen++
		if r.seen == r.failAt {
			r.mu.Unlock()
			return blob.NotFound(key) // any error: the store refused
		}
	}
	r.mu.Unlock()
	if err := r.Store.Put(ctx, key, rd, size); err != nil {
		return err
	}
	r.mu.Lock()
	r.puts = append(r.puts, key)
	r.mu.Unlock()
	return nil
}

// memStore is an in-memory blob.Store for fuzzing (a directory per run
// would be slow).
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMem() *memStore { return &memStore{m: map[string][]byte{}} }

func (s *memStore) Put(_ context.Context, key string, r io.Reader, _ int64) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = b
	return nil
}

func (s *memStore) Get(_ context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[key]
	if !ok {
		return nil, blob.NotFound(key)
	}
	if !rng.IsWhole() {
		if rng.Offset >= int64(len(b)) {
			return nil, blob.ErrRangeNotSatisfiable
		}
		b = b[rng.Offset:]
		if rng.Length > 0 && rng.Length < int64(len(b)) {
			b = b[:rng.Length]
		}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *memStore) Stat(_ context.Context, key string) (blob.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[key]
	if !ok {
		return blob.Info{}, blob.NotFound(key)
	}
	return blob.Info{Key: key, Size: int64(len(b)), ModTime: time.Now()}, nil
}

func (s *memStore) List(_ context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		s.mu.Lock()
		var ks []string
		for k := range s.m {
			if strings.HasPrefix(k, prefix) {
				ks = append(ks, k)
			}
		}
		s.mu.Unlock()
		slices.Sort(ks)
		for _, k := range ks {
			if !yield(blob.Info{Key: k}, nil) {
				return
			}
		}
	}
}

func (s *memStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

// readAll reads every entry of backup name.
func readAll(t testing.TB, r *Repo, name string) []*Entry {
	t.Helper()
	m, err := r.OpenManifest(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Entry
	for {
		e, err := m.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

// contentOf restores e's content.
func contentOf(t testing.TB, r *Repo, e *Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := r.ReadFile(context.Background(), e, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// settle stores everything w has queued, its last pack included, as
// Commit does before it writes the manifest: the chunks are then
// readable, and found by other writers.
func settle(t testing.TB, w *Writer) {
	t.Helper()
	if err := w.wait(); err != nil {
		t.Fatal(err)
	}
	if err := w.flushPack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.wait(); err != nil {
		t.Fatal(err)
	}
}

// unpacked returns a repository whose writers store each chunk as an
// object of its own, as cove did before packs: what tests of such
// objects (and of the repositories cove wrote then) use.
func unpacked(s blob.Store, k *Key) *Repo {
	r := New(s, k, nil)
	r.SetPacks(false)
	return r
}
