package backuprepo

import (
	"context"
	"fmt"

	"github.com/covedev/cove/internal/blob"
)

// Repack copies the chunks of packs that keep says are still needed into
// new packs (of up to packTarget bytes), each chunk verified first, and
// returns the packs it emptied: those each needed chunk of which is now
// in another pack (copied now, once however many candidates hold it, or
// in a newer pack that is not a candidate already). Garbage collection then
// deletes those: the index points readers at the copies. A needed chunk
// that does not check out is not copied, and its pack is not returned
// (it stays, as the only copy there is). Packs without an index are
// skipped.
func (r *Repo) Repack(ctx context.Context, packs []PackID, keep func(ChunkID) bool) (emptied []PackID, chunks int, bytes int64, err error) {
	var (
		data    []byte
		entries []PackEntry
		copied  = map[ChunkID]bool{}
		cands   = map[PackID]bool{}
	)
	for _, p := range packs {
		cands[p] = true
	}
	flush := func() error {
		if len(entries) == 0 {
			return nil
		}
		id, err := newPackID()
		if err != nil {
			return err
		}
		if _, err := r.putPack(ctx, id, data, entries); err != nil {
			return fmt.Errorf("repack: %w", err)
		}
		chunks += len(entries)
		bytes += int64(len(data))
		data, entries = nil, nil
		return nil
	}
	// A newer copy in a pack not repacked now serves, once read and
	// checked: an older one may be the damaged copy a writer stored the
	// chunk again for, and any copy may have rotted since.
	elsewhere := func(id ChunkID, p PackID) bool {
		for _, l := range r.NewerCopies(id, p) {
			if !cands[l.Pack] && r.CheckCopy(ctx, id, l) == nil {
				return true
			}
		}
		return false
	}
	for _, p := range packs {
		idx, err := r.readIndex(ctx, p)
		if blob.IsNotFound(err) {
			continue
		}
		if err != nil {
			return emptied, chunks, bytes, fmt.Errorf("repack: %w", err)
		}
		pack, err := r.readPack(ctx, p)
		if blob.IsNotFound(err) {
			continue
		}
		if err != nil {
			return emptied, chunks, bytes, fmt.Errorf("repack: %w", err)
		}
		whole := true
		for _, e := range idx {
			if !keep(e.ID) || copied[e.ID] || elsewhere(e.ID, p) {
				continue
			}
			sealed, err := r.entryOf(p, pack, e)
			if err != nil {
				r.log.Warn("backup gc: a chunk that does not check out is not copied; the pack is kept", "pack", r.PackKey(p), "err", err)
				whole = false
				continue
			}
			if len(data)+len(sealed) > packTarget || len(entries) == maxPackEntries {
				if err := flush(); err != nil {
					return emptied, chunks, bytes, err
				}
			}
			entries = append(entries, PackEntry{ID: e.ID, Offset: uint32(len(data)), Length: e.Length})
			data = append(data, sealed...)
			copied[e.ID] = true
		}
		if whole {
			emptied = append(emptied, p)
		}
	}
	if err := flush(); err != nil {
		return nil, chunks, bytes, err
	}
	return emptied, chunks, bytes, nil
}
