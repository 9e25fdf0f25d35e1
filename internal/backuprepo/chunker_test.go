package backuprepo

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"slices"
	"testing"
)

// boundaries returns the chunk sizes of data under k.
func boundaries(t *testing.T, k *Key, data []byte) []int {
	t.Helper()
	var sizes []int
	err := k.Split(context.Background(), bytes.NewReader(data), func(c []byte) error {
		sizes = append(sizes, len(c))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sizes
}

func TestChunkBoundaries(t *testing.T) {
	k := testKey(t, 1)
	data := randomBytes(7, 12*AvgChunkSize)
	a, b := boundaries(t, k, data), boundaries(t, k, data)
	if !slices.Equal(a, b) {
		t.Fatalf("same content, same key: boundaries %v then %v", a, b)
	}
	sum := 0
	for i, n := range a {
		sum += n
		if n > MaxChunkSize || (n < MinChunkSize && i != len(a)-1) {
			t.Errorf("chunk %d of %d bytes, outside %d to %d", i, n, MinChunkSize, MaxChunkSize)
		}
	}
	if sum != len(data) {
		t.Errorf("chunks add up to %d bytes of %d", sum, len(data))
	}
	if other := boundaries(t, testKey(t, 2), data); slices.Equal(a, other) {
		t.Errorf("another key cut the same boundaries %v: chunk sizes would fingerprint content across organizations", a)
	}
	if got := boundaries(t, k, data[:MinChunkSize-1]); len(got) != 1 {
		t.Errorf("a small file: %d chunks, want 1", len(got))
	}
	if got := boundaries(t, k, nil); len(got) != 0 {
		t.Errorf("an empty file: %d chunks, want none", len(got))
	}
}

func TestInsertedByteReusesMostChunks(t *testing.T) {
	ctx := context.Background()
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	data := randomBytes(9, 24*AvgChunkSize)
	w, err := r.NewWriter(ctx, "b1", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := w.StoreContent(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	settle(t, w)
	w2, err := r.NewWriter(ctx, "b2", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	shifted := append([]byte{'!'}, data...)
	second, _, err := w2.StoreContent(ctx, bytes.NewReader(shifted))
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.wait(); err != nil { // uploads run in the background; the counts are final after them
		t.Fatal(err)
	}
	t.Logf("%d chunks, then %d new and %d reused after inserting a byte", len(first), w2.sum.ChunksNew, w2.sum.ChunksReused)
	// Content-defined boundaries resynchronise after the first cut: only
	// the chunks before it are new (one, or two if a cut moved).
	if w2.sum.ChunksNew > 2 || w2.sum.BytesNew > 2*MaxChunkSize {
		t.Errorf("one byte inserted at the start of %d chunks: %d chunks (%d bytes) new, want at most 2", len(first), w2.sum.ChunksNew, w2.sum.BytesNew)
	}
	if w2.sum.ChunksReused < int64(len(second))-2 {
		t.Errorf("%d of %d chunks reused", w2.sum.ChunksReused, len(second))
	}
}

// measuringReader yields size pseudo-random bytes and records the largest
// live heap seen (after a collection) every step bytes.
type measuringReader struct {
	src      io.Reader
	read     int64
	step     int64
	nextStep int64
	maxHeap  uint64
}

func (m *measuringReader) Read(p []byte) (int, error) {
	n, err := m.src.Read(p)
	m.read += int64(n)
	if m.read >= m.nextStep {
		m.nextStep += m.step
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		m.maxHeap = max(m.maxHeap, ms.HeapAlloc)
	}
	return n, err
}

// prng is an endless deterministic incompressible stream.
type prng struct{ x uint64 }

func (p *prng) Read(b []byte) (int, error) {
	for i := range b {
		p.x ^= p.x << 13
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		b[i] = byte(p.x)
	}
	return len(b), nil
}

func TestLargeFileBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 32 chunks' worth of data")
	}
	ctx := context.Background()
	s, _ := newLocal(t)
	r := New(s, testKey(t, 1), nil)
	size := int64(32 * MaxChunkSize)
	// Warm up the pools (scan buffer, zstd) so that they count in the base.
	w, err := r.NewWriter(ctx, "warm", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.StoreContent(ctx, io.LimitReader(&prng{x: 1}, 2*MaxChunkSize)); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	src := &measuringReader{src: io.LimitReader(&prng{x: 99}, size), step: MaxChunkSize}
	w, err = r.NewWriter(ctx, "big", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile(ctx, Entry{Path: "big", Type: TypeFile}, src); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	grew := int64(src.maxHeap) - int64(base.HeapAlloc)
	t.Logf("backup of %d bytes: live heap grew by at most %d bytes", size, grew)
	// The chunks in flight and their buffers (6 of the largest), and the
	// packs the writer holds: the one it fills and those being stored
	// (upload.go): bounded whatever the file's size.
	if limit := int64(6*MaxChunkSize + (1+maxPackUploads)*maxPackSize); grew > limit || limit >= size {
		t.Errorf("backing up %d bytes grew the live heap by %d bytes, more than %d: the file is not streamed", size, grew, limit)
	}

	// Restore streams too: one chunk at a time.
	e := readAll(t, r, "big")[0]
	runtime.GC()
	runtime.ReadMemStats(&base)
	mw := &measuringWriter{step: MaxChunkSize}
	if err := r.ReadFile(ctx, e, mw); err != nil {
		t.Fatal(err)
	}
	if mw.n != size {
		t.Fatalf("restored %d bytes of %d", mw.n, size)
	}
	if grew := int64(mw.maxHeap) - int64(base.HeapAlloc); grew > int64(6*MaxChunkSize) {
		t.Errorf("restoring %d bytes grew the live heap by %d bytes", size, grew)
	}
}

type measuringWriter struct {
	n, step, nextStep int64
	maxHeap           uint64
}

func (m *measuringWriter) Write(p []byte) (int, error) {
	m.n += int64(len(p))
	if m.n >= m.nextStep {
		m.nextStep += m.step
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		m.maxHeap = max(m.maxHeap, ms.HeapAlloc)
	}
	return len(p), nil
}
