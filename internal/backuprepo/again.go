package backuprepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
)

// StoreChanged is StoreContent of a file that a previous backup stored as
// prev (its chunk list) and that may have changed since (its times did):
// it reads the file from r, at most size bytes, and returns the same chunk
// list StoreContent would, cheaper when most of the content is unchanged.
//
// Where the file still holds a previous chunk at its previous place, the
// chunk is recognised by hashing that range and comparing the hash with
// the chunk's id, and reused: not chunked, copied or stored again. From
// the first range that differs the content is cut by the chunker; a chunk
// it cuts at exactly a previous chunk's place is compared with that chunk
// (hashed once: reused when equal, stored under the hash when not), and
// once 2×MaxChunkSize bytes in a row were found unchanged that way the
// ranges are compared again without cutting. The result is what cutting
// the whole file gives when prev was cut by the chunker: a cut depends only
// on the bytes since the cut before it, so the boundaries of an unchanged
// prefix are cuts of the new content too, and so is every boundary after
// one of them up to the next range that differs. The previous last chunk,
// which ended where the file did, is compared without cutting only when
// the file still ends there. (When prev was not cut by the chunker —
// around the holes of a sparse file — the list differs from a full cut but
// still describes the content exactly: every reused range hashed to its
// chunk's id.)
//
// Costs: a file changed from its start is read and hashed once more for
// its first range; otherwise every byte is read once, plus at most what
// the chunker read ahead when comparing resumes (2×MaxChunkSize, after as
// many bytes found unchanged), whatever the pattern of changes. A file of
// unchanged content (a git pack whose time git refreshed) costs its read
// and hash: its chunks are hashed several at once, and nothing is cut,
// copied or stored. Only ids of the current kind (ChunkIDOf) are
// compared: a previous list of older ids is cut and hashed like new
// content, once.
func (w *Writer) StoreChanged(ctx context.Context, r io.ReaderAt, size int64, prev []ChunkRef) ([]ChunkRef, int64, error) {
	p := newPrevChunks(prev)
	var c contentRefs
	next := 0 // index in prev of the chunk starting at c.size, or -1
	// Ranges compared at once: one when comparing starts (the content may
	// differ from there on, and the hash of a window would be wasted),
	// twice as many after each window found unchanged.
	window := 1
	err := func() error {
		for c.size < size {
			if err := ctx.Err(); err != nil {
				return err
			}
			if next >= 0 {
				n, whole, err := w.sameChunks(r, c.size, size, p, next, window)
				if err != nil {
					return err
				}
				before := c.size
				for _, ref := range prev[next : next+n] {
					c.reuse(ref)
				}
				w.reused(c.size-before, int64(n))
				if next += n; !whole || n == 0 || next == len(prev) {
					next = -1
				}
				window = min(2*window, maxWindow)
				continue
			}
			var same int64 // bytes in a row found unchanged at their place
			start := c.size
			err := w.repo.key.Split(ctx, io.NewSectionReader(r, start, size-start), func(chunk []byte) error {
				i, ok := p.startingAt(c.size)
				if !ok || p.ends[i] != c.size+int64(len(chunk)) {
					same = 0
					return w.addChunk(ctx, &c, chunk)
				}
				id := w.repo.ChunkIDOf(chunk)
				if id != prev[i].ID {
					same = 0
					return w.addChunkID(ctx, &c, chunk, id)
				}
				c.reuse(prev[i])
				w.reused(int64(len(chunk)), 1)
				if same += int64(len(chunk)); same >= 2*MaxChunkSize && i+1 < len(prev) && c.size < size {
					next, window = i+1, 1
					return errResync
				}
				return nil
			})
			if !errors.Is(err, errResync) {
				return err // cut to the end (or the file ended sooner)
			}
		}
		return nil
	}()
	refs := c.done()
	if err != nil {
		return nil, 0, err
	}
	return refs, c.size, nil
}

// maxWindow bounds the ranges compared at once (the buffer bounds their
// bytes: 2×MaxChunkSize).
const maxWindow = 256

// errResync stops the chunker where a cut meets a previous boundary.
var errResync = errors.New("back on a previous boundary")

// prevChunks is a previous chunk list with where each chunk ends.
type prevChunks struct {
	refs []ChunkRef
	ends []int64 // ends[i]: the offset after refs[i]
}

func newPrevChunks(refs []ChunkRef) prevChunks {
	p := prevChunks{refs: refs, ends: make([]int64, len(refs))}
	var off int64
	for i, r := range refs {
		off += int64(r.Size)
		p.ends[i] = off
	}
	return p
}

// startingAt returns the index of the previous chunk that starts at off,
// if one does.
func (p prevChunks) startingAt(off int64) (int, bool) {
	if off == 0 {
		return 0, len(p.refs) > 0
	}
	i, found := slices.BinarySearch(p.ends, off)
	if !found || i+1 >= len(p.refs) {
		return 0, false
	}
	return i + 1, true
}

// sameChunks reads the ranges of the previous chunks from index next on
// (starting at offset off of r), at most window of them and as many as one
// buffer holds, and returns how many in a row hash to their previous id,
// and whether that is all of the window's. A range is compared only when
// it is wholly within size and, for the previous last chunk, ends where
// the file does. The ranges of a window are hashed at once.
func (w *Writer) sameChunks(r io.ReaderAt, off, size int64, p prevChunks, next, window int) (int, bool, error) {
	total := min(len(p.refs), next+window)
	end := next
	var span int64
	for end < total {
		n := int64(p.refs[end].Size)
		last := end == len(p.refs)-1
		if n == 0 || n > MaxChunkSize || span+n > 2*MaxChunkSize || off+span+n > size || (last && off+span+n != size) {
			break
		}
		span += n
		end++
	}
	if end == next {
		return 0, false, nil
	}
	bufp := scanBuffers.Get().(*[]byte)
	defer scanBuffers.Put(bufp)
	buf := (*bufp)[:span]
	got, err := r.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return 0, false, fmt.Errorf("read: %w", err)
	}
	// The ranges wholly read, hashed by two goroutines (this one and
	// another): more would only queue behind each other for the CPUs
	// the walk needs too.
	k := 0
	for at := int64(0); next+k < end; k++ {
		n := int64(p.refs[next+k].Size)
		if at+n > int64(got) {
			break // the file ended sooner: the chunker reads what is left
		}
		at += n
	}
	same := make([]bool, k)
	var todo atomic.Int64
	hash := func() {
		for {
			i := int(todo.Add(1)) - 1
			if i >= k {
				return
			}
			ref := p.refs[next+i]
			start := p.ends[next+i] - int64(ref.Size) - off
			same[i] = w.repo.ChunkIDOf(buf[start:start+int64(ref.Size)]) == ref.ID
		}
	}
	var wg sync.WaitGroup
	if k > 1 {
		wg.Go(hash)
	}
	hash()
	wg.Wait()
	n := 0
	for n < len(same) && same[n] {
		n++
	}
	return n, n == end-next, nil
}

// reused counts chunks (of n bytes in all) stored before and taken again.
func (w *Writer) reused(n, chunks int64) {
	if chunks == 0 {
		return
	}
	w.mu.Lock()
	w.sum.BytesReused += n
	w.sum.ChunksReused += chunks
	w.mu.Unlock()
}
