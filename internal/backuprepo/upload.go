package backuprepo

import (
	"context"
	"fmt"
	"sync"
)

// Uploads in flight. A writer stores chunks concurrently: a chunk of
// content is copied and handed to an upload goroutine that computes its id
// (a keyed hash of the plaintext), looks it up in the repository (the
// packs' index; chunks stored as objects of their own are asked about in
// the store), seals it (zstd + XChaCha20-Poly1305) and adds it to the
// pack being filled (packer.go). At most maxUploads chunks are in flight
// per writer, so a writer holds at most maxUploads copies of a chunk
// (MaxChunkSize each, 32 MiB in all) plus their sealed forms, and at most
// the pack it fills and maxPackUploads packs being stored (maxPackSize,
// 12.3 MB, each); a caller with a chunk to queue waits for a slot.
//
// The first upload error is kept: the writer's next call returns it and
// queues nothing more, and Commit waits for every upload and fails with
// it, so a manifest never names a chunk that was not stored.
const maxUploads = 8

// uploads tracks a writer's chunks in flight.
type uploads struct {
	slots chan struct{}
	wg    sync.WaitGroup
	// guarded by Writer.mu
	pending map[ChunkID]struct{} // ids queued and not finished
	err     error                // the first upload error
}

// uploadErr returns the first upload error, if any.
func (w *Writer) uploadErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up.err
}

// queueChunk stores chunk (of id) unless this writer stored it, found it
// stored or has it in flight; the summary's counters are updated when the
// outcome is known. chunk is copied unless shared (an immutable slice,
// the zero chunk) is true.
func (w *Writer) queueChunk(ctx context.Context, id ChunkID, chunk []byte, shared bool) error {
	size := int64(len(chunk))
	w.mu.Lock()
	claimed, err := w.claimLocked(id, size)
	w.mu.Unlock()
	if err != nil || !claimed {
		return err
	}
	select {
	case w.up.slots <- struct{}{}:
	case <-ctx.Done():
		w.finish(id, size, 0, ctx.Err())
		return ctx.Err()
	}
	data := chunk
	if !shared {
		data = append(make([]byte, 0, len(chunk)), chunk...)
	}
	w.up.wg.Add(1)
	go func() {
		defer w.up.wg.Done()
		defer func() { <-w.up.slots }()
		w.storeChunk(ctx, id, data, false)
	}()
	return nil
}

// queueContent is queueChunk of a chunk whose id is not known yet: the
// chunk is copied and its id computed on the upload's goroutine, set in
// *id before hashed.Done. So a large file's chunks are hashed while the
// next ones are read and cut, on as many CPUs as there are.
func (w *Writer) queueContent(ctx context.Context, chunk []byte, id *ChunkID, hashed *sync.WaitGroup) error {
	if err := w.uploadErr(); err != nil {
		return err
	}
	select {
	case w.up.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	data := append(make([]byte, 0, len(chunk)), chunk...)
	size := int64(len(data))
	w.up.wg.Add(1)
	hashed.Add(1)
	go func() {
		defer w.up.wg.Done()
		defer func() { <-w.up.slots }()
		*id = w.repo.ChunkIDOf(data)
		hashed.Done()
		w.mu.Lock()
		claimed, err := w.claimLocked(*id, size)
		w.mu.Unlock()
		if err != nil || !claimed {
			return // the error is the writer's already
		}
		w.storeChunk(ctx, *id, data, false)
	}()
	return nil
}

// claimLocked decides whether the caller stores chunk id: not when this
// writer stored it, found it stored or has it in flight (counted as
// reused), nor after an upload failed (its error). A claimed id is in
// flight until finish.
func (w *Writer) claimLocked(id ChunkID, size int64) (bool, error) {
	if err := w.up.err; err != nil {
		return false, err
	}
	_, known := w.known[id]
	_, inFlight := w.up.pending[id]
	if known || inFlight {
		w.sum.BytesReused += size
		w.sum.ChunksReused++
		return false, nil
	}
	if w.up.pending == nil {
		w.up.pending = map[ChunkID]struct{}{}
	}
	w.up.pending[id] = struct{}{}
	return true, nil
}

// failLocked records err as the writer's failure unless it failed
// already: it cannot commit any more. w.mu is held.
func (w *Writer) failLocked(err error) {
	if w.up.err == nil {
		w.up.err = fmt.Errorf("backup %q: %w", w.name, err)
	}
}

// finish records the outcome of storing chunk id of size bytes.
func (w *Writer) finish(id ChunkID, size, stored int64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.up.pending, id)
	if err != nil {
		w.failLocked(err)
		return
	}
	if w.known == nil {
		w.known = map[ChunkID]struct{}{}
	}
	if len(w.known) < maxKnown {
		w.known[id] = struct{}{}
	}
	if stored > 0 {
		w.sum.BytesNew += size
		w.sum.ChunksNew++
		w.sum.StoredBytes += stored
	} else {
		w.sum.BytesReused += size
		w.sum.ChunksReused++
	}
}

// Wait waits for every chunk in flight and returns the first error of
// storing one. A caller giving up on a writer (a backup that failed) calls
// it so that nothing of that backup is still being stored once it returns.
func (w *Writer) Wait() error { return w.wait() }

// wait waits for every upload in flight and returns the first error.
func (w *Writer) wait() error {
	w.up.wg.Wait()
	return w.uploadErr()
}
