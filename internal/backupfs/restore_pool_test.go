package backupfs

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
	"sync"
	"testing"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
)

// gatedStore wraps a store: before each chunk Get it calls gate (which
// may block or fail it), and it counts the chunk Gets in flight.
type gatedStore struct {
	blob.Store
	gate  func(ctx context.Context, key string) error
	files map[string]uint32 // if set, only these keys (chunks of files, by size) are gated and counted

	mu       sync.Mutex
	inFlight int
	maxIn    int
	bytesIn  int64 // of the chunks in flight (with files)
	maxBytes int64
}

func (s *gatedStore) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, error) {
	size, ok := s.files[key]
	chunks := strings.HasPrefix(key, backuprepo.ChunksPrefix) || strings.HasPrefix(key, backuprepo.PacksPrefix)
	if !chunks || s.gate == nil || s.files != nil && !ok {
		return s.Store.Get(ctx, key, rng)
	}
	s.mu.Lock()
	s.inFlight++
	s.bytesIn += int64(size)
	s.maxIn = max(s.maxIn, s.inFlight)
	s.maxBytes = max(s.maxBytes, s.bytesIn)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.bytesIn -= int64(size)
		s.mu.Unlock()
	}()
	if err := s.gate(ctx, key); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, key, rng)
}

// gatedRepo returns a repository over the store in dir (as newRepo made
// it) whose chunk Gets go through g.
func gatedRepo(t *testing.T, dir string, g *gatedStore) *backuprepo.Repo {
	t.Helper()
	s, err := localblob.New(dir, nil)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	g.Store = s
	k, err := backuprepo.ParseKey(bytes.Repeat([]byte{7}, backuprepo.KeySize))
	must(t, err)
	return backuprepo.New(g, k, nil)
}

// fileChunks returns the store keys of the chunks of backup name's files
// (not of its manifest's pieces), with their sizes.
func fileChunks(t *testing.T, repo *backuprepo.Repo, name string) map[string]uint32 {
	t.Helper()
	m, err := repo.OpenManifest(context.Background(), name)
	must(t, err)
	keys := map[string]uint32{}
	for {
		e, err := m.Next()
		if err == io.EOF {
			return keys
		}
		must(t, err)
		for _, c := range e.Chunks {
			id := c.ID.String()
			keys["chunks/"+id[:2]+"/"+id] = c.Size
		}
	}
}

// manyFiles writes n small files (a chunk each) and the given big ones
// into a new source directory and returns it with the contents by name.
func manyFiles(t *testing.T, n int, big map[string]int) (string, map[string][]byte) {
	t.Helper()
	src := emptyDir(t, "src")
	contents := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("d%d/f%03d", i%7, i)
		contents[name] = randomBytes(uint64(i+1), 1000+i*37)
	}
	for name, size := range big {
		contents[name] = randomBytes(uint64(len(name)*7919+size), size)
	}
	for name, c := range contents {
		must(t, os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755))
		writeFile(t, filepath.Join(src, name), c, 0o644, int(mapA.HostUID), int(mapA.HostGID))
	}
	return src, contents
}

// onlyWholeFiles fails the test if a regular file below dir is not one of
// contents (by its path below dir) with all its content: a file the
// restore did not finish must not be left under its name.
func onlyWholeFiles(t *testing.T, dir string, contents map[string][]byte) {
	t.Helper()
	n := 0
	must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		n++
		rel, _ := filepath.Rel(dir, p)
		want, ok := contents[filepath.ToSlash(rel)]
		if got, rerr := os.ReadFile(p); !ok || rerr != nil || !bytes.Equal(got, want) {
			t.Errorf("%s left, not a whole file of the backup (%d bytes of %d, %v)", rel, len(got), len(want), rerr)
		}
		return nil
	}))
	if n == 0 && len(contents) > 0 {
		t.Errorf("no file below %s: the check checks nothing", dir)
	}
}

// noDescriptorsInto fails the test if this process still has a
// descriptor open on something below dir.
func noDescriptorsInto(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	for _, e := range ents {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && (p == dir || strings.HasPrefix(p, dir+"/")) {
			t.Errorf("descriptor %s still open on %s", e.Name(), p)
		}
	}
}

// TestParallelCorruptChunks: with files written several at once, the
// files whose chunk is missing or corrupt (one of many small files, a
// chunk in the middle of a big one) are exactly the ones listed, in
// manifest order; every other file is restored whole, nothing is left
// under a temporary name.
func TestParallelCorruptChunks(t *testing.T) {
	requireRoot(t)
	repo, blobs := newRepoUnpacked(t)
	src, contents := manyFiles(t, 300, map[string]int{"big/a": 6 << 20, "big/b": 5 << 20})
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})

	// The middle chunk of big/a is corrupted, the only chunk of d3/f150
	// removed, the only chunk of d0/f007 corrupted.
	m, err := repo.OpenManifest(context.Background(), "b")
	must(t, err)
	chunkOf := map[string][]backuprepo.ChunkRef{}
	for {
		e, err := m.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		chunkOf[e.Path] = e.Chunks
	}
	file := func(ref backuprepo.ChunkRef) string {
		id := ref.ID.String()
		return filepath.Join(blobs, "chunks", id[:2], id)
	}
	flip := func(p string) {
		data, err := os.ReadFile(p)
		must(t, err)
		data[len(data)/2] ^= 1
		must(t, os.WriteFile(p, data, 0o644))
	}
	bigA := chunkOf["ws/big/a"]
	if len(bigA) < 3 {
		t.Fatalf("big/a has %d chunks, want a middle one", len(bigA))
	}
	flip(file(bigA[len(bigA)/2]))
	must(t, os.Remove(file(chunkOf["ws/d3/f150"][0])))
	flip(file(chunkOf["ws/d0/f007"][0]))

	target := emptyDir(t, "t")
	res, err := Restore(context.Background(), repo, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB, Workers: 8, Log: testLog(t)})
	must(t, err)
	want := []string{"ws/big/a", "ws/d0/f007", "ws/d3/f150"}
	if got := failedPaths(res); !slices.Equal(got, want) || res.FailedCount != 3 {
		t.Fatalf("failed %q (%d), want %q", got, res.FailedCount, want)
	}
	if !strings.Contains(res.Failed[0].Err.Error(), fmt.Sprintf("chunk %d of %d", len(bigA)/2+1, len(bigA))) {
		t.Errorf("big/a's reason does not name its chunk: %v", res.Failed[0].Err)
	}
	for name, c := range contents {
		got, err := os.ReadFile(filepath.Join(target, name))
		if slices.Contains(want, "ws/"+name) {
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: left under its name (%v)", name, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, c) {
			t.Errorf("%s restored wrong (%v)", name, err)
		}
	}
	if res.Files != int64(len(contents)-3) {
		t.Errorf("%d files restored, want %d", res.Files, len(contents)-3)
	}
	onlyWholeFiles(t, target, contents)
	noDescriptorsInto(t, target)
}

// TestParallelChunksInFlightBounded: a restore fetches Workers chunks at
// once, never more, and never more than restoreBytesInFlight of them (what
// bounds its memory), however many files and chunks there are.
func TestParallelChunksInFlightBounded(t *testing.T) {
	requireRoot(t)
	repo, blobs := newRepoUnpacked(t)
	src, contents := manyFiles(t, 100, map[string]int{"big/a": 9 << 20, "big/b": 9 << 20, "big/c": 9 << 20, "big/d": 9 << 20})
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})
	files := fileChunks(t, repo, "b")

	restore := func(t *testing.T, workers int, g *gatedStore) {
		t.Helper()
		r := gatedRepo(t, blobs, g)
		target := emptyDir(t, "t")
		res, err := Restore(context.Background(), r, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB, Workers: workers})
		must(t, err)
		if res.FailedCount != 0 || res.Files != int64(len(contents)) {
			t.Fatalf("restored %d files, failed %v", res.Files, res.Failed)
		}
		for name, c := range contents {
			if got, err := os.ReadFile(filepath.Join(target, name)); err != nil || !bytes.Equal(got, c) {
				t.Errorf("%s restored wrong (%v)", name, err)
			}
		}
		onlyWholeFiles(t, target, contents)
	}
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			// The first `workers` Gets wait until all of them are in
			// flight: the restore must reach that many at once.
			var arrived sync.WaitGroup
			arrived.Add(workers)
			all := make(chan struct{})
			go func() { arrived.Wait(); close(all) }()
			n := 0
			var mu sync.Mutex
			g := &gatedStore{files: files, gate: func(ctx context.Context, key string) error {
				mu.Lock()
				n++
				first := n <= workers
				mu.Unlock()
				if first {
					arrived.Done()
					select {
					case <-all:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			}}
			restore(t, workers, g)
			if g.maxIn != workers {
				t.Errorf("%d chunks fetched at once at most, want %d (Workers)", g.maxIn, workers)
			}
		})
	}
	t.Run("bytes", func(t *testing.T) {
		// Many workers, big chunks: the bytes in flight stay within the
		// bound (lowered to two of the largest chunks).
		old := restoreBytesInFlight
		restoreBytesInFlight = 2 * backuprepo.MaxChunkSize
		defer func() { restoreBytesInFlight = old }()
		g := &gatedStore{files: files, gate: func(context.Context, string) error { return nil }}
		restore(t, 32, g)
		if g.maxBytes > restoreBytesInFlight {
			t.Errorf("%d bytes of chunks fetched at once, more than the bound %d", g.maxBytes, restoreBytesInFlight)
		}
		var big int64
		for _, size := range files {
			if size > backuprepo.MinChunkSize {
				big++
			}
		}
		if big < 8 {
			t.Errorf("only %d big chunks: the bound is not put to the test", big)
		}
	})
}

// TestParallelStoreFails: a store that stops answering (not a missing or
// corrupt chunk: the store out of reach) stops the restore with its
// error; the workers stop (Restore returns), no file is left partly
// written and no descriptor stays open.
func TestParallelStoreFails(t *testing.T) {
	requireRoot(t)
	repo, blobs := newRepo(t)
	src, contents := manyFiles(t, 200, map[string]int{"big/a": 6 << 20})
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})

	down := errors.New("connection refused")
	var mu sync.Mutex
	gets := 0
	g := &gatedStore{gate: func(ctx context.Context, key string) error {
		mu.Lock()
		defer mu.Unlock()
		gets++
		if gets > 40 {
			return fmt.Errorf("blob get %q: %w", key, down)
		}
		return nil
	}}
	r := gatedRepo(t, blobs, g)
	target := emptyDir(t, "t")
	res, err := Restore(context.Background(), r, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB, Workers: 8})
	if !errors.Is(err, down) || !strings.Contains(err.Error(), "restore stopped") {
		t.Fatalf("restore from a store gone: %v", err)
	}
	if res.FailedCount != 0 {
		t.Errorf("files listed as failed (%v): the store being down is not their fault", res.Failed)
	}
	onlyWholeFiles(t, target, contents)
	noDescriptorsInto(t, target)
	if g.inFlight != 0 {
		t.Errorf("%d Gets still in flight after Restore returned", g.inFlight)
	}
}

// TestParallelCancelled: cancelling a restore while chunks are in flight
// stops it with the context's error; what was being written is removed.
func TestParallelCancelled(t *testing.T) {
	requireRoot(t)
	repo, blobs := newRepo(t)
	src, contents := manyFiles(t, 200, map[string]int{"big/a": 6 << 20})
	backup(t, repo, "b", "", mapA, Source{Name: "ws", Dir: src})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	gets := 0
	g := &gatedStore{gate: func(gctx context.Context, key string) error {
		mu.Lock()
		gets++
		n := gets
		mu.Unlock()
		if n == 50 {
			cancel()
		}
		if n >= 50 { // held until the restore gives up on it
			<-gctx.Done()
			return gctx.Err()
		}
		return nil
	}}
	r := gatedRepo(t, blobs, g)
	target := emptyDir(t, "t")
	res, err := Restore(ctx, r, "b", []Source{{Name: "ws", Dir: target}}, RestoreOptions{Map: mapB, Workers: 8})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled restore: %v", err)
	}
	if res.FailedCount != 0 {
		t.Errorf("files listed as failed (%v) by a cancelled restore", res.Failed)
	}
	onlyWholeFiles(t, target, contents)
	noDescriptorsInto(t, target)
	if res.Files >= 201 {
		t.Errorf("%d files restored: the restore went on after it was cancelled", res.Files)
	}
}
