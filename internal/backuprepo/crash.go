package backuprepo

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/covedev/cove/internal/blob"
)

// crashedStore is a store whose objects, written without a sync each, a
// host crash can leave damaged under their names, and which records when
// that can have happened (localblob with BatchedSync: its crash markers).
type crashedStore interface {
	// CrashedWrites says whether earlier boots of this machine may have
	// ended with unsynced objects of this store's scope, since when,
	// whether another machine may have some, and from when on the
	// store's objects are covered by markers.
	CrashedWrites() (blob.CrashState, error)
	// ClearCrashed removes markers once their objects were checked.
	ClearCrashed(markers []string) error
	// Quarantine moves an object aside, open, to be checked and put back
	// or dropped: what is dropped is what was checked, never a copy
	// stored under the key meanwhile.
	Quarantine(ctx context.Context, key string) (blob.Quarantined, error)
}

// checkCrashed decides, once per Repo, whether chunks the store holds can
// be reused without reading them back (storedWhole). On a store that keeps
// crash markers, it can when no earlier boot of this machine may have
// ended with unsynced chunks of this key, no other machine sharing the
// store may have some, and the chunk was written since the store began to
// keep markers; when an earlier boot may have, every chunk written since
// its marker is read and verified first, one that does not check out is
// deleted (the next backup that needs its content stores it again), and
// the markers are cleared. Otherwise, or when the check fails (logged;
// the backup goes on), storedWhole verifies each chunk it reuses.
func (r *Repo) checkCrashed(ctx context.Context) {
	r.crashMu.Lock()
	defer r.crashMu.Unlock()
	if r.trusted {
		return
	}
	cs, ok := r.store.(crashedStore)
	if !ok {
		return
	}
	st, err := cs.CrashedWrites()
	if err != nil {
		r.log.Warn("backup: cannot tell whether the host crashed with chunks unsynced; verifying each stored chunk reused", "err", err)
		return
	}
	if len(st.Markers) > 0 {
		checked, removed, err := r.scrubSince(ctx, cs, st.Since)
		if err != nil {
			r.log.Warn("backup: checking the chunks written before a host crash failed; verifying each stored chunk reused", "err", err)
			return
		}
		if err := cs.ClearCrashed(st.Markers); err != nil {
			r.log.Warn("backup: cannot clear the crash markers", "err", err)
			return
		}
		r.log.Info("backup: checked the chunks written before a host crash", "since", st.Since, "checked", checked, "removed", removed)
	}
	if st.Foreign {
		r.log.Debug("backup: another machine writes to the store; verifying each stored chunk reused")
		return
	}
	r.trusted, r.epoch = true, st.Epoch
}

// scrubSince verifies every chunk of this key modified at or after since
// and deletes those that do not check out, and every pack of this key
// modified since: one that does not check out whole is deleted, index
// first (no committed manifest names its chunks: a commit syncs the
// store before writing its manifest, so a pack damaged by a crash was
// named by none; the next writer needing its content stores it again). Chunks of other keys (another
// organization's, in a shared store) are left to their key's holder.
func (r *Repo) scrubSince(ctx context.Context, cs crashedStore, since time.Time) (checked, removed int, err error) {
	for info, err := range r.store.List(ctx, ChunksPrefix) {
		if err != nil {
			return checked, removed, fmt.Errorf("list chunks: %w", err)
		}
		if info.ModTime.Before(since) {
			continue
		}
		id, perr := ParseChunkID(path.Base(info.Key))
		if perr != nil || id.key() != info.Key {
			continue // not a chunk's key
		}
		_, gerr := r.getOwnChunk(ctx, ChunkRef{ID: id})
		switch {
		case gerr == nil, errors.Is(gerr, ErrWrongKey), blob.IsNotFound(gerr):
		case IsCorrupt(gerr):
			dropped, err := r.dropDamaged(ctx, cs, id)
			if err != nil {
				return checked, removed, err
			}
			if dropped {
				r.log.Warn("backup: a chunk written before a host crash does not check out; deleted", "chunk", info.Key, "err", gerr)
				removed++
			}
		default:
			return checked, removed, fmt.Errorf("verify chunk %s: %w", info.Key, gerr)
		}
		checked++
	}
	// Indexes first: a pack is stored before its index, so an index
	// listed before the packs whose pack is not listed lost it (another
	// backup storing a pack and its index between the two listings shows
	// both, or its pack only).
	indexes, err := r.listPacks(ctx, IndexPrefix, ParseIndexKey)
	if err != nil {
		return checked, removed, fmt.Errorf("list pack indexes: %w", err)
	}
	packs, err := r.listPacks(ctx, PacksPrefix, ParsePackKey)
	if err != nil {
		return checked, removed, fmt.Errorf("list packs: %w", err)
	}
	for p, written := range indexes {
		// An index whose pack the crash lost: nothing reads it (LoadIndex
		// needs the pack listed); deleted (the index only), its content
		// is stored again.
		if _, ok := packs[p]; !ok && !written.Before(since) {
			r.log.Warn("backup: a pack index written before a host crash has no pack; deleted", "index", r.IndexKey(p))
			r.dropPack(p)
			if err := r.store.Delete(ctx, r.IndexKey(p)); err != nil && !blob.IsNotFound(err) {
				return checked, removed, fmt.Errorf("delete a pack index without its pack: %w", err)
			}
			removed++
		}
	}
	for p, written := range packs {
		if written.Before(since) {
			continue
		}
		n, damaged, err := r.scrubPack(ctx, p)
		if err != nil {
			return checked, removed, err
		}
		checked += n
		if damaged != nil {
			r.log.Warn("backup: a pack written before a host crash does not check out; deleted", "pack", r.PackKey(p), "err", damaged)
			if err := r.dropPackObjects(ctx, p); err != nil {
				return checked, removed, err
			}
			removed++
		}
	}
	return checked, removed, nil
}

// scrubPack verifies every chunk of pack p (of this key) against its
// index: it returns how many were checked and why the pack is damaged,
// if it is (its index or a chunk does not check out, or it is shorter
// than its index says). A pack without an index, or of another key, is
// not checked.
func (r *Repo) scrubPack(ctx context.Context, p PackID) (int, error, error) {
	entries, err := r.readIndex(ctx, p)
	switch {
	case err == nil:
	case blob.IsNotFound(err), errors.Is(err, ErrWrongKey):
		return 0, nil, nil
	case IsCorrupt(err):
		return 0, err, nil
	default:
		return 0, nil, fmt.Errorf("verify pack %s: %w", p, err)
	}
	data, err := r.readPack(ctx, p)
	switch {
	case blob.IsNotFound(err):
		return 0, nil, nil
	case IsCorrupt(err):
		return 0, err, nil
	case err != nil:
		return 0, nil, fmt.Errorf("verify pack %s: %w", p, err)
	}
	for i, e := range entries {
		if _, err := r.entryOf(p, data, e); err != nil {
			return i + 1, err, nil
		}
	}
	return len(entries), nil, nil
}

// dropPackObjects deletes pack p's index, then the pack, and forgets it.
func (r *Repo) dropPackObjects(ctx context.Context, p PackID) error {
	r.dropPack(p)
	for _, key := range []string{r.IndexKey(p), r.PackKey(p)} {
		if err := r.store.Delete(ctx, key); err != nil && !blob.IsNotFound(err) {
			return fmt.Errorf("delete a damaged pack: %w", err)
		}
	}
	return nil
}

// dropDamaged deletes the chunk id found damaged, unless what the key
// holds by now checks out (another backup stored it again meanwhile): the
// object is moved aside, checked again as moved, then dropped or put back.
func (r *Repo) dropDamaged(ctx context.Context, cs crashedStore, id ChunkID) (dropped bool, err error) {
	q, err := cs.Quarantine(ctx, id.key())
	if blob.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("set a damaged chunk aside: %w", err)
	}
	if _, verr := r.chunkFrom(q, ChunkRef{ID: id}); verr == nil || errors.Is(verr, ErrWrongKey) || !IsCorrupt(verr) {
		if err := q.Restore(); err != nil {
			return false, fmt.Errorf("put a chunk back: %w", err)
		}
		return false, nil
	}
	if err := q.Drop(); err != nil {
		return false, fmt.Errorf("delete a damaged chunk: %w", err)
	}
	return true, nil
}

// getOwnChunk reads and opens chunk ref's object of its own (not a copy
// in a pack, which GetChunk would prefer).
func (r *Repo) getOwnChunk(ctx context.Context, ref ChunkRef) ([]byte, error) {
	rc, err := r.store.Get(ctx, ref.ID.key(), blob.Range{})
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", ref.ID, err)
	}
	defer rc.Close()
	return r.chunkFrom(rc, ref)
}
