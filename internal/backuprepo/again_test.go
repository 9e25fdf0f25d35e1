package backuprepo

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/covedev/cove/internal/blob"
)

// requestCounter counts the requests for chunks.
type requestCounter struct {
	blob.Store
	puts, stats atomic.Int64
}

func (s *requestCounter) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasPrefix(key, "chunks/") {
		s.puts.Add(1)
	}
	return s.Store.Put(ctx, key, r, size)
}

func (s *requestCounter) Stat(ctx context.Context, key string) (blob.Info, error) {
	if strings.HasPrefix(key, "chunks/") {
		s.stats.Add(1)
	}
	return s.Store.Stat(ctx, key)
}

// countingReaderAt counts the bytes read.
type countingReaderAt struct {
	r    io.ReaderAt
	read int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.read += int64(n)
	return n, err
}

// storedBefore stores content as a previous backup did and returns its
// chunk list.
func storedBefore(t *testing.T, r *Repo, content []byte) []ChunkRef {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, "before", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	prev, _, err := w.StoreContent(ctx, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	settle(t, w)
	return prev
}

// changes are edits of a previous content, as files see them.
var changes = []struct {
	name string
	edit func(old []byte) []byte
}{
	{"unchanged", func(b []byte) []byte { return b }},
	{"region rewritten in the middle", func(b []byte) []byte {
		return slices.Concat(b[:12<<20], randomBytes(77, 1<<20), b[13<<20:])
	}},
	{"two regions rewritten", func(b []byte) []byte {
		return slices.Concat(b[:5<<20], randomBytes(78, 100<<10), b[5<<20+100<<10:18<<20], randomBytes(79, 300<<10), b[18<<20+300<<10:])
	}},
	{"appended to", func(b []byte) []byte { return slices.Concat(b, randomBytes(80, 3<<20)) }},
	{"truncated", func(b []byte) []byte { return b[:10<<20+12345] }},
	{"a byte inserted in the middle", func(b []byte) []byte { return slices.Concat(b[:9<<20], []byte{1}, b[9<<20:]) }},
	{"first byte changed", func(b []byte) []byte { c := slices.Clone(b); c[0]++; return c }},
	{"last byte changed", func(b []byte) []byte { c := slices.Clone(b); c[len(c)-1]++; return c }},
	{"all new", func(b []byte) []byte { return randomBytes(81, len(b)) }},
	{"zeros in the middle", func(b []byte) []byte {
		return slices.Concat(b[:8<<20], make([]byte, 6<<20), b[14<<20:])
	}},
	{"tiny", func(b []byte) []byte { return b[:100] }},
	{"empty", func(b []byte) []byte { return nil }},
}

// TestStoreChangedCutsAsAWholeRead: whatever the change, the chunk list is
// the one cutting the whole new content gives; unchanged ranges are read
// once and cost no request to the store.
func TestStoreChangedCutsAsAWholeRead(t *testing.T) {
	ctx := context.Background()
	st := &requestCounter{Store: newMem()}
	r := New(st, testKey(t, 3), nil)
	old := randomBytes(7, 24<<20)
	prev := storedBefore(t, r, old)
	if len(prev) < 8 {
		t.Fatalf("%d chunks: too few for the test", len(prev))
	}
	for i, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			cur := c.edit(old)
			w, err := r.NewWriter(ctx, "whole"+string(rune('a'+i)), Metadata{})
			if err != nil {
				t.Fatal(err)
			}
			want, wantSize, err := w.StoreContent(ctx, bytes.NewReader(cur))
			if err != nil {
				t.Fatal(err)
			}
			settle(t, w)
			w2, err := r.NewWriter(ctx, "again"+string(rune('a'+i)), Metadata{})
			if err != nil {
				t.Fatal(err)
			}
			puts, stats := st.puts.Load(), st.stats.Load()
			cr := &countingReaderAt{r: bytes.NewReader(cur)}
			got, size, err := w2.StoreChanged(ctx, cr, int64(len(cur)), prev)
			if err != nil {
				t.Fatal(err)
			}
			settle(t, w2)
			if size != wantSize || size != int64(len(cur)) {
				t.Errorf("size %d, want %d", size, len(cur))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("chunk list %v\nwant (a whole read) %v", got, want)
			}
			if !bytes.Equal(contentOf(t, r, &Entry{Type: TypeFile, Size: size, Chunks: got}), cur) {
				t.Fatal("content read back differs")
			}
			// Requests to the store (a Stat, and a Put if missing): none
			// for a chunk found at its previous place.
			inPlace := map[ChunkRef]int64{}
			var off int64
			for _, ref := range prev {
				inPlace[ref] = off
				off += int64(ref.Size)
			}
			var others int64
			off = 0
			for _, ref := range got {
				if at, ok := inPlace[ref]; !ok || at != off {
					others++
				}
				off += int64(ref.Size)
			}
			reqs := st.puts.Load() - puts + st.stats.Load() - stats
			if c.name == "unchanged" && (reqs != 0 || cr.read != int64(len(cur))) {
				t.Errorf("unchanged content: %d requests to the store, %d of %d bytes read", reqs, cr.read, len(cur))
			}
			if reqs > 2*others {
				t.Errorf("%d requests for %d chunks, of which %d were not in place", reqs, len(got), others)
			}
			t.Logf("%d chunks, %d not in place; %d requests; %d of %d bytes read", len(got), others, reqs, cr.read, len(cur))
		})
	}
}

// TestStoreChangedOfAnyPreviousList: a previous chunk list not cut by the
// chunker (as around a sparse file's holes) is reused where its ranges
// still hash to their ids, and the list always describes the content.
func TestStoreChangedOfAnyPreviousList(t *testing.T) {
	ctx := context.Background()
	r := New(newMem(), testKey(t, 4), nil)
	old := randomBytes(8, 24<<20+777)
	w0, err := r.NewWriter(ctx, "b0", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	var prev []ChunkRef
	for off := 0; off < len(old); off += 300 << 10 {
		ref, err := w0.putChunk(ctx, old[off:min(off+300<<10, len(old))])
		if err != nil {
			t.Fatal(err)
		}
		prev = append(prev, ref)
	}
	settle(t, w0)
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			cur := c.edit(old)
			w, err := r.NewWriter(ctx, "x", Metadata{})
			if err != nil {
				t.Fatal(err)
			}
			got, size, err := w.StoreChanged(ctx, bytes.NewReader(cur), int64(len(cur)), prev)
			if err != nil {
				t.Fatal(err)
			}
			settle(t, w)
			if size != int64(len(cur)) || !bytes.Equal(contentOf(t, r, &Entry{Type: TypeFile, Size: size, Chunks: got}), cur) {
				t.Fatalf("%d bytes stored of %d, or content read back differs", size, len(cur))
			}
			if c.name == "unchanged" && !slices.Equal(got, prev) {
				t.Errorf("unchanged content: list %v, want the previous %v", got, prev)
			}
		})
	}
}

// TestStoreChangedReadsOnce: a change in every previous chunk that keeps
// the chunker's cuts (a byte early in each: the chunker looks for a cut
// only past MinChunkSize), or a previous list of the older kind of ids,
// does not make it read the file again and again: at most its first
// range twice (review S12-1).
func TestStoreChangedReadsOnce(t *testing.T) {
	ctx := context.Background()
	r := New(newMem(), testKey(t, 7), nil)
	old := randomBytes(11, 32<<20)
	prev := storedBefore(t, r, old)
	scattered := bytes.Clone(old)
	var off int64
	for _, ref := range prev {
		scattered[off+100]++
		off += int64(ref.Size)
	}
	olderIDs := slices.Clone(prev)
	off = 0
	for i, ref := range olderIDs {
		olderIDs[i].ID = r.oldChunkIDOf(old[off : off+int64(ref.Size)])
		off += int64(ref.Size)
	}
	for _, tc := range []struct {
		name string
		cur  []byte
		prev []ChunkRef
	}{
		{"every chunk changed at its start", scattered, prev},
		{"previous ids of the older kind", old, olderIDs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := r.NewWriter(ctx, "x", Metadata{})
			if err != nil {
				t.Fatal(err)
			}
			want, _, err := w.StoreContent(ctx, bytes.NewReader(tc.cur))
			if err != nil {
				t.Fatal(err)
			}
			cr := &countingReaderAt{r: bytes.NewReader(tc.cur)}
			got, size, err := w.StoreChanged(ctx, cr, int64(len(tc.cur)), tc.prev)
			if err != nil {
				t.Fatal(err)
			}
			settle(t, w)
			if size != int64(len(tc.cur)) || !slices.Equal(got, want) {
				t.Fatalf("%d bytes, chunk list %v; want %d, %v", size, got, len(tc.cur), want)
			}
			if limit := int64(len(tc.cur)) + int64(tc.prev[0].Size); cr.read > limit {
				t.Errorf("%d bytes read for %d: want at most %d", cr.read, len(tc.cur), limit)
			}
		})
	}
}

// TestStoreChangedManySmallRanges: a previous list of many small chunks
// (not cut by the chunker) found unchanged is reused whole, however many
// windows it takes.
func TestStoreChangedManySmallRanges(t *testing.T) {
	ctx := context.Background()
	st := &requestCounter{Store: newMem()}
	r := New(st, testKey(t, 8), nil)
	content := randomBytes(12, 20000*100)
	w0, err := r.NewWriter(ctx, "b0", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	var prev []ChunkRef
	for off := 0; off < len(content); off += 100 {
		ref, err := w0.putChunk(ctx, content[off:off+100])
		if err != nil {
			t.Fatal(err)
		}
		prev = append(prev, ref)
	}
	settle(t, w0)
	w, err := r.NewWriter(ctx, "x", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	puts, stats := st.puts.Load(), st.stats.Load()
	got, _, err := w.StoreChanged(ctx, bytes.NewReader(content), int64(len(content)), prev)
	if err != nil {
		t.Fatal(err)
	}
	settle(t, w)
	if !slices.Equal(got, prev) {
		t.Errorf("unchanged content of %d small chunks: %d chunks, not the previous ones", len(prev), len(got))
	}
	if n := st.puts.Load() - puts + st.stats.Load() - stats; n != 0 {
		t.Errorf("%d requests to the store for unchanged content", n)
	}
}
