package backuprepo

import (
	"context"
	"fmt"
	"sync"
)

// maxPackUploads bounds the packs a writer stores at once (each holds
// up to maxPackSize bytes).
const maxPackUploads = 2

// packer fills a writer's packs: upload goroutines add sealed chunks; a
// full pack is stored on a goroutine of its own, and its chunks are
// finished (known to the writer, counted) once it and its index are.
type packer struct {
	mu      sync.Mutex
	data    []byte
	entries []PackEntry
	parts   []packPart
	slots   chan struct{}
}

// packPart is what the writer counts of a chunk in a pack.
type packPart struct {
	size  int64
	piece bool            // a manifest piece: counted in StoredBytes only
	ctx   context.Context // the storing call's: cancelled, the pack is not stored
}

// storeChunk stores chunk id (data, its content) unless the repository
// has it already, and records the outcome (finish) once known: at once
// when it was found, or once the pack it was added to is stored.
func (w *Writer) storeChunk(ctx context.Context, id ChunkID, data []byte, piece bool) {
	part := packPart{size: int64(len(data)), piece: piece, ctx: ctx}
	if !w.repo.packs.Load() {
		_, stored, err := w.repo.putChunk(ctx, id, data)
		w.finishPart(id, part, stored, err)
		return
	}
	found, err := w.repo.findStored(ctx, ChunkRef{ID: id, Size: uint32(len(data))})
	if err == nil && !found {
		err = ctx.Err()
	}
	if err == nil && !found {
		var sealed []byte
		if sealed, err = w.repo.key.seal(kindChunk, id.String(), data); err == nil {
			_ = w.addToPack(ctx, id, sealed, part) // its failure is the pack's chunks', recorded
			return
		}
	}
	w.finishPart(id, part, 0, err)
}

// finishPart is finish of a chunk or of a manifest piece.
func (w *Writer) finishPart(id ChunkID, part packPart, stored int64, err error) {
	if !part.piece {
		w.finish(id, part.size, stored, err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failLocked(fmt.Errorf("manifest piece: %w", err))
	}
	w.sum.StoredBytes += stored
}

// addToPack appends a sealed chunk to the pack being filled, and stores
// the pack once it holds packTarget bytes or maxPackEntries chunks. An error is recorded as the
// outcome of the pack's chunks, this one included.
func (w *Writer) addToPack(ctx context.Context, id ChunkID, sealed []byte, part packPart) error {
	p := &w.pack
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.data == nil {
		p.data = make([]byte, 0, packTarget+maxSealed)
	}
	p.entries = append(p.entries, PackEntry{ID: id, Offset: uint32(len(p.data)), Length: uint32(len(sealed))})
	p.data = append(p.data, sealed...)
	p.parts = append(p.parts, part)
	if len(p.data) < packTarget && len(p.entries) < maxPackEntries {
		return nil
	}
	return w.flushPackLocked(ctx)
}

// flushPack stores the pack being filled, if any (Commit).
func (w *Writer) flushPack(ctx context.Context) error {
	w.pack.mu.Lock()
	defer w.pack.mu.Unlock()
	return w.flushPackLocked(ctx)
}

// flushPackLocked stores the pack filled so far on a goroutine of its
// own; w.pack.mu is held. It waits for a pack upload slot; stopped, the
// pack's chunks fail.
func (w *Writer) flushPackLocked(ctx context.Context) error {
	p := &w.pack
	if len(p.entries) == 0 {
		return nil
	}
	data, entries, parts := p.data, p.entries, p.parts
	p.data, p.entries, p.parts = nil, nil, nil
	fail := func(err error) error {
		for i, e := range entries {
			w.finishPart(e.ID, parts[i], 0, err)
		}
		return err
	}
	// A chunk whose storing was cancelled (the backup given up) is not
	// stored by a later call (Commit): the writer fails instead, as it
	// would with that chunk's upload in flight.
	for _, pt := range parts {
		if err := pt.ctx.Err(); err != nil {
			return fail(err)
		}
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	id, err := newPackID()
	if err != nil {
		<-p.slots
		return fail(err)
	}
	w.up.wg.Add(1)
	go func() {
		defer w.up.wg.Done()
		defer func() { <-p.slots }()
		stored, err := w.repo.putPack(ctx, id, data, entries)
		if err != nil {
			fail(err)
			return
		}
		// The index's bytes are counted with the pack's first chunk.
		for i, e := range entries {
			n := int64(e.Length)
			if i == 0 {
				n = stored - int64(len(data)) + n
			}
			w.finishPart(e.ID, parts[i], n, nil)
		}
	}()
	return nil
}
