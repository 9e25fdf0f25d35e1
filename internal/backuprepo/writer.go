package backuprepo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// Writer writes one backup: content first (chunks), the manifest's pieces
// as they fill, and the manifest root last, by Commit. Until Commit
// succeeds no manifest exists, so a backup exists completely or not at
// all. Chunks are stored concurrently (see maxUploads): StoreContent
// returns once its chunks are queued, and Commit waits for them all before
// it writes the manifest root. StoreContent is safe for concurrent use;
// Add, Reuse and Commit must be called in order from one goroutine.
type Writer struct {
	repo  *Repo
	name  string
	meta  Metadata
	start time.Time

	mu    sync.Mutex // guards sum's content counters, known, zero and up's state
	sum   Summary
	known map[ChunkID]struct{} // chunks this writer stored or found stored
	zero  map[int]ChunkID      // ids of all-zero chunks by size
	up    uploads
	pack  packer

	piece     []byte // records of the piece being filled
	rec       []byte // the last record's body (a buffer used again)
	pieces    []ChunkRef
	last      string
	any       bool
	committed bool
}

// NewWriter starts the backup name (which becomes the key
// manifests/<name>: letters, digits, '.', '_', '-' and '/'). A backup of
// that name must not exist.
func (r *Repo) NewWriter(ctx context.Context, name string, meta Metadata) (*Writer, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := r.mustNotExist(ctx, name); err != nil {
		return nil, err
	}
	start := time.Now() // before the index is read: see CommitGCSafe
	r.checkCrashed(ctx)
	if err := r.LoadIndex(ctx); err != nil {
		return nil, fmt.Errorf("backup %q: %w", name, err)
	}
	return &Writer{repo: r, name: name, meta: meta, start: start,
		up: uploads{slots: make(chan struct{}, maxUploads)}, pack: packer{slots: make(chan struct{}, maxPackUploads)}}, nil
}

func (r *Repo) mustNotExist(ctx context.Context, name string) error {
	_, err := r.store.Stat(ctx, manifestKey(name))
	switch {
	case err == nil:
		return errdefs.AlreadyExists(fmt.Errorf("backup %q already exists", name))
	case errdefs.Is(err, errdefs.CategoryNotFound):
		return nil
	default:
		return fmt.Errorf("backup %q: %w", name, err)
	}
}

// StoreContent chunks and stores the content of rd (streamed: memory stays
// bounded whatever its size) and returns its chunk list and length, to put
// in a file entry given to Add.
func (w *Writer) StoreContent(ctx context.Context, rd io.Reader) ([]ChunkRef, int64, error) {
	var c contentRefs
	err := w.repo.key.Split(ctx, rd, func(chunk []byte) error { return w.addChunk(ctx, &c, chunk) })
	refs := c.done()
	if err != nil {
		return nil, 0, err
	}
	return refs, c.size, nil
}

// contentRefs is the chunk list of content being stored, in order: the
// ids of chunks hashed on upload goroutines are filled in by done.
type contentRefs struct {
	refs   []ChunkRef
	ids    []*ChunkID // refs[i]'s id once hashed (nil: set already)
	hashed sync.WaitGroup
	size   int64
}

// addChunk stores the next chunk of c's content (queued; hashed on the
// upload's goroutine).
func (w *Writer) addChunk(ctx context.Context, c *contentRefs, chunk []byte) error {
	if err := c.grow(len(chunk)); err != nil {
		return err
	}
	if allZero(chunk) {
		ref, err := w.putChunkZero(ctx, chunk, true)
		c.refs, c.ids = append(c.refs, ref), append(c.ids, nil)
		return err
	}
	id := new(ChunkID)
	c.refs, c.ids = append(c.refs, ChunkRef{Size: uint32(len(chunk))}), append(c.ids, id)
	return w.queueContent(ctx, chunk, id, &c.hashed)
}

// addChunkID is addChunk of a chunk hashed already (id).
func (w *Writer) addChunkID(ctx context.Context, c *contentRefs, chunk []byte, id ChunkID) error {
	if err := c.grow(len(chunk)); err != nil {
		return err
	}
	c.refs, c.ids = append(c.refs, ChunkRef{ID: id, Size: uint32(len(chunk))}), append(c.ids, nil)
	return w.queueChunk(ctx, id, chunk, false)
}

// grow counts n more bytes of c's content, within what a file may hold.
func (c *contentRefs) grow(n int) error {
	if c.size+int64(n) > MaxFileSize {
		return errdefs.InvalidArgument(fmt.Errorf("file larger than %d bytes, the most a backup stores", int64(MaxFileSize)))
	}
	c.size += int64(n)
	return nil
}

// reuse appends a chunk stored already.
func (c *contentRefs) reuse(ref ChunkRef) {
	c.refs, c.ids = append(c.refs, ref), append(c.ids, nil)
	c.size += int64(ref.Size)
}

// done waits for c's chunks to be hashed and returns its chunk list.
func (c *contentRefs) done() []ChunkRef {
	c.hashed.Wait()
	for i, id := range c.ids {
		if id != nil {
			c.refs[i].ID = *id
		}
	}
	return c.refs
}

// StoreZeros returns the chunk list of n zero bytes (a hole of a sparse
// file) without reading or chunking anything: chunks of MaxChunkSize and
// the rest, all-zero, each stored once per repository.
func (w *Writer) StoreZeros(ctx context.Context, n int64) ([]ChunkRef, error) {
	if n < 0 || n > MaxFileSize {
		return nil, errdefs.InvalidArgument(fmt.Errorf("%d zero bytes: out of range", n))
	}
	var refs []ChunkRef
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		size := int(min(n, MaxChunkSize))
		ref, err := w.putChunkZero(ctx, zeroChunk()[:size], true)
		if err != nil {
			return nil, err
		}
		refs = append(refs, ref)
		n -= int64(size)
	}
	return refs, nil
}

// zeroChunk is the content of all-zero chunks (never written), made on
// first use.
var zeroChunk = sync.OnceValue(func() []byte { return make([]byte, MaxChunkSize) })

// maxKnown bounds the chunk ids a writer remembers (32 bytes each, and the
// map's own): past it, chunks are asked about in the store again.
const maxKnown = 1 << 18

// putChunk queues a chunk of content for storing unless this writer
// stored it, found it stored or has it in flight: a chunk repeated within
// one backup (the zeros of a sparse file, a file copied) costs no request
// to the store, and an all-zero chunk is not even hashed again.
func (w *Writer) putChunk(ctx context.Context, chunk []byte) (ChunkRef, error) {
	return w.putChunkZero(ctx, chunk, allZero(chunk))
}

// putChunkZero is putChunk of a chunk known to be all zeros or not (an
// all-zero chunk is a slice of zeroChunk, never copied).
func (w *Writer) putChunkZero(ctx context.Context, chunk []byte, zero bool) (ChunkRef, error) {
	w.mu.Lock()
	id, ok := w.zero[len(chunk)]
	w.mu.Unlock()
	if !zero || !ok {
		id = w.repo.ChunkIDOf(chunk)
	}
	if zero && !ok {
		w.mu.Lock()
		if w.zero == nil {
			w.zero = map[int]ChunkID{}
		}
		if len(w.zero) < 64 {
			w.zero[len(chunk)] = id
		}
		w.mu.Unlock()
	}
	if zero {
		chunk = zeroChunk()[:len(chunk)] // immutable: queued without a copy
	}
	ref := ChunkRef{ID: id, Size: uint32(len(chunk))}
	if err := w.queueChunk(ctx, id, chunk, zero); err != nil {
		return ChunkRef{}, err
	}
	return ref, nil
}

// zeroBlock is compared with content to tell zeros.
var zeroBlock [64 << 10]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// AddFile stores a file's content from rd and adds its entry (with the
// size and chunks read).
func (w *Writer) AddFile(ctx context.Context, e Entry, rd io.Reader) error {
	refs, size, err := w.StoreContent(ctx, rd)
	if err != nil {
		return fmt.Errorf("back up %q: %w", e.Path, err)
	}
	e.Type, e.Chunks, e.Size = TypeFile, refs, size
	return w.Add(ctx, e)
}

// Reuse adds the file entry e, unchanged since prev (see Unchanged), with
// prev's content: nothing is read or stored.
func (w *Writer) Reuse(ctx context.Context, e Entry, prev *Entry) error {
	if prev == nil || prev.Type != TypeFile {
		return errdefs.InvalidArgument(fmt.Errorf("reuse %q: no previous file entry", e.Path))
	}
	e.Type, e.Chunks, e.Size = TypeFile, prev.Chunks, prev.Size
	w.reused(prev.Size, int64(len(prev.Chunks)))
	return w.Add(ctx, e)
}

// Add appends an entry to the manifest. Entries come in path order (a
// depth-first walk visiting children in byte order, parents first); an
// invalid entry or one out of order is refused.
func (w *Writer) Add(ctx context.Context, e Entry) error {
	if w.committed {
		return errdefs.FailedPrecondition(fmt.Errorf("backup %q already committed", w.name))
	}
	if err := w.uploadErr(); err != nil {
		return err
	}
	if err := e.Validate(); err != nil {
		return err
	}
	if w.any && comparePaths(w.last, e.Path) >= 0 {
		return errdefs.InvalidArgument(fmt.Errorf("manifest entry %q after %q: entries must come once each, in walk order", e.Path, w.last))
	}
	first := e.Chunks
	if len(first) > refsPerRecord {
		first = first[:refsPerRecord]
	}
	if err := w.writeRecord(ctx, appendEntry(w.rec[:0], &e, first)); err != nil {
		return err
	}
	for rest := e.Chunks[len(first):]; len(rest) > 0; {
		n := min(len(rest), refsPerRecord)
		if err := w.writeRecord(ctx, appendChunks(w.rec[:0], rest[:n])); err != nil {
			return err
		}
		rest = rest[n:]
	}
	w.last, w.any = e.Path, true
	w.mu.Lock()
	w.sum.Entries++
	if e.Type == TypeFile {
		w.sum.Files++
		w.sum.Bytes += e.Size
	}
	w.mu.Unlock()
	return nil
}

// writeRecord appends a record body (kept as w.rec, a buffer used again)
// to the current piece.
func (w *Writer) writeRecord(ctx context.Context, body []byte) error {
	w.rec = body
	if len(body) > maxLine {
		return errdefs.InvalidArgument(fmt.Errorf("manifest entry of %d bytes, more than %d", len(body), maxLine))
	}
	w.piece = appendRecord(w.piece, body)
	if len(w.piece) >= pieceTarget {
		if err := w.flush(ctx); err != nil {
			// The record is in the piece while the entry failed: the
			// writer cannot commit any more.
			w.mu.Lock()
			w.failLocked(err)
			w.mu.Unlock()
			return err
		}
	}
	return nil
}

// flush stores the piece filled so far. It is hashed here and stored on
// an upload's goroutine (Commit waits for it before writing the root), so
// that the walk adding entries does not compress, seal and write it.
func (w *Writer) flush(ctx context.Context) error {
	if len(w.piece) == 0 {
		return nil
	}
	if err := w.uploadErr(); err != nil {
		return err
	}
	piece := w.piece
	if len(piece) > MaxChunkSize {
		return errdefs.InvalidArgument(fmt.Errorf("backup %q: manifest piece of %d bytes", w.name, len(piece)))
	}
	// The slot first: a flush that fails changes nothing (the piece stays
	// buffered, and is not named).
	select {
	case w.up.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	id := w.repo.ChunkIDOf(piece)
	w.pieces = append(w.pieces, ChunkRef{ID: id, Size: uint32(len(piece))})
	w.piece = make([]byte, 0, cap(piece))
	w.up.wg.Add(1)
	go func() {
		defer w.up.wg.Done()
		defer func() { <-w.up.slots }()
		w.storeChunk(ctx, id, piece, true)
	}()
	return nil
}

// Commit waits for every chunk in flight, writes the manifest root,
// making the backup exist, and returns its summary. If any chunk failed to
// be stored (or ctx is done), nothing is committed.
func (w *Writer) Commit(ctx context.Context) (Summary, error) {
	if w.committed {
		return Summary{}, errdefs.FailedPrecondition(fmt.Errorf("backup %q already committed", w.name))
	}
	if err := w.wait(); err != nil {
		return Summary{}, err
	}
	if err := w.flush(ctx); err != nil {
		return Summary{}, err
	}
	if err := w.wait(); err != nil { // the last piece, packed
		return Summary{}, err
	}
	if err := w.flushPack(ctx); err != nil {
		return Summary{}, err
	}
	if err := w.wait(); err != nil { // the last pack
		return Summary{}, err
	}
	if err := ctx.Err(); err != nil {
		return Summary{}, fmt.Errorf("backup %q: %w", w.name, err)
	}
	w.mu.Lock()
	sum := w.sum
	w.mu.Unlock()
	sum.Duration = time.Since(w.start)
	// Version 4 whenever a chunk it names may be in a pack: a cove that
	// does not read packs must refuse it.
	version := manifestVersion
	if w.repo.packs.Load() || w.repo.hasPacks() {
		version = packedVersion
	}
	rt := root{Version: version, Name: w.name, Meta: w.meta, Summary: sum, Pieces: w.pieces}
	doc, err := json.Marshal(rt)
	if err != nil {
		return Summary{}, fmt.Errorf("backup %q: manifest: %w", w.name, err)
	}
	sealed, err := w.repo.key.seal(kindManifest, manifestKey(w.name), doc)
	if err != nil {
		return Summary{}, err
	}
	if err := w.repo.mustNotExist(ctx, w.name); err != nil {
		return Summary{}, err
	}
	// Every chunk and piece the root names is durable before the root is
	// written (a store that batches durability syncs here), and the root
	// is durable before Commit returns.
	if err := blob.Sync(ctx, w.repo.store); err != nil {
		return Summary{}, fmt.Errorf("backup %q: sync chunks: %w", w.name, err)
	}
	if err := w.repo.store.Put(ctx, manifestKey(w.name), bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return Summary{}, fmt.Errorf("backup %q: write manifest: %w", w.name, err)
	}
	if err := blob.Sync(ctx, w.repo.store); err != nil {
		return Summary{}, fmt.Errorf("backup %q: sync manifest: %w", w.name, err)
	}
	w.committed = true
	sum.StoredBytes += int64(len(sealed))
	return sum, nil
}
