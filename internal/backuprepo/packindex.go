package backuprepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/covedev/cove/internal/blob"
)

// The in-memory index of a Repo's packs: where each chunk is (about 80
// bytes per chunk), read when a writer starts (only the index objects it
// has not read yet) and when a restore asks for a chunk it does not know.

// packLoc is where the in-memory index has a chunk.
type packLoc struct {
	pack   int32 // in packIndex.packs
	offset uint32
	length uint32
}

// packInfo is a pack the in-memory index read the index of.
type packInfo struct {
	id      PackID
	written time.Time // its index's modification time, on the storage's clock
	seq     uint64    // the listing under way (or last done) when it was added
	gone    bool      // its index was not listed any more
}

// packIndex is a Repo's index of its packs.
type packIndex struct {
	mu     sync.RWMutex
	packs  []packInfo
	byPack map[PackID]int32
	byID   map[ChunkID]packLoc
	alts   map[ChunkID][]packLoc // other copies of a chunk (repacked, or stored again)
	bad    map[PackID]bool       // indexes that do not check out: not read again
	// Listings, in the order they start (refresh held): started counts
	// them, done is the number of the last one finished.
	started, done uint64
	refresh       sync.Mutex // held while one lists
}

// Location is where a chunk is stored: in a pack (Packed true), or as an
// object of its own.
type Location struct {
	Pack   PackID
	Packed bool
	Offset int64
	Length int64
}

// locate returns where the in-memory index has chunk id (its newest copy).
func (r *Repo) locate(id ChunkID) (Location, time.Time, bool) {
	x := &r.index
	x.mu.RLock()
	defer x.mu.RUnlock()
	l, ok := x.byID[id]
	if !ok {
		return Location{}, time.Time{}, false
	}
	return x.location(l), x.packs[l.pack].written, true
}

func (x *packIndex) location(l packLoc) Location {
	return Location{Pack: x.packs[l.pack].id, Packed: true, Offset: int64(l.offset), Length: int64(l.length)}
}

// copiesLocked returns the copies of chunk id the index knows (the
// preferred one first) in packs not gone that keep accepts; x.mu is held.
func (x *packIndex) copiesLocked(id ChunkID, keep func(pack int32) bool) []Location {
	var out []Location
	add := func(l packLoc) {
		if !x.packs[l.pack].gone && keep(l.pack) {
			out = append(out, x.location(l))
		}
	}
	if l, ok := x.byID[id]; ok {
		add(l)
	}
	for _, l := range x.alts[id] {
		add(l)
	}
	return out
}

// alternatives returns the copies of chunk id the index knows (newest
// first) but the one in pack not.
func (r *Repo) alternatives(id ChunkID, not PackID) []Location {
	x := &r.index
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.copiesLocked(id, func(pack int32) bool { return x.packs[pack].id != not })
}

// Copies returns every copy of chunk id the index knows, the newest first.
func (r *Repo) Copies(id ChunkID) []Location { return r.alternatives(id, PackID{}) }

// CheckCopy reads the copy of chunk id at l and checks it out (it opens,
// and its content has the id): what a collector counting on that copy
// to delete another does first.
func (r *Repo) CheckCopy(ctx context.Context, id ChunkID, l Location) error {
	sc, err := r.fetchPacked(ctx, ChunkRef{ID: id}, l)
	if err != nil {
		return err
	}
	_, err = r.OpenChunk(sc)
	return err
}

// NewerCopies returns the copies of chunk id in packs preferred to pack p
// (see newer): a chunk stored again because its copy did not check out,
// or copied by a repack, is newer than the copy it replaces. None when
// the index does not know p.
func (r *Repo) NewerCopies(id ChunkID, p PackID) []Location {
	x := &r.index
	x.mu.RLock()
	defer x.mu.RUnlock()
	than, ok := x.byPack[p]
	if !ok {
		return nil
	}
	return x.copiesLocked(id, func(pack int32) bool { return pack != than && x.newer(pack, than) })
}

// Locate returns where chunk id is stored, as far as the index read last
// says (LoadIndex); false means not in a pack (an object of its own, or
// not stored).
func (r *Repo) Locate(id ChunkID) (Location, bool) {
	l, _, ok := r.locate(id)
	return l, ok
}

// maxIndexReads bounds the index objects read at once.
const maxIndexReads = 16

// LoadIndex brings the in-memory index up to date with the store: it lists
// this organization's packs and their indexes, reads the indexes it has
// not read yet, and forgets packs whose index is gone (garbage
// collected). An index is used only if its pack is listed too (a pack is
// stored before its index, so an index without one is what a crash, a
// collection racing a stalled writer, or someone deleting the pack left).
// An index that does not authenticate or parse (not written by a holder
// of the key, or damaged) is logged, left out and not read again: its
// chunks are stored again by the next writer that needs them, and a
// restore that needs them reports them missing. One that cannot be read
// now (the store's error) is left out this time.
func (r *Repo) LoadIndex(ctx context.Context) error {
	r.index.refresh.Lock()
	defer r.index.refresh.Unlock()
	return r.loadIndexLocked(ctx, false)
}

// LoadIndexWhole is LoadIndex failing when an index cannot be read (the
// store's error): garbage collection decides from the whole index.
func (r *Repo) LoadIndexWhole(ctx context.Context) error {
	r.index.refresh.Lock()
	defer r.index.refresh.Unlock()
	return r.loadIndexLocked(ctx, true)
}

// indexSeq returns how many listings had started.
func (r *Repo) indexSeq() uint64 {
	r.index.mu.RLock()
	defer r.index.mu.RUnlock()
	return r.index.started
}

// refreshIndex brings the index up to date unless a listing that started
// after seen (the listings started when a chunk was looked for and not
// found where the index said) has finished since: one listing serves
// every chunk found missing meanwhile.
func (r *Repo) refreshIndex(ctx context.Context, seen uint64) error {
	r.index.refresh.Lock()
	defer r.index.refresh.Unlock()
	r.index.mu.RLock()
	done := r.index.done
	r.index.mu.RUnlock()
	if done > seen {
		return nil
	}
	return r.loadIndexLocked(ctx, false)
}

// listPacks lists the packs (or indexes) under prefix of this key.
func (r *Repo) listPacks(ctx context.Context, prefix string, parse func(string) (string, PackID, bool)) (map[PackID]time.Time, error) {
	out := map[PackID]time.Time{}
	for info, err := range r.store.List(ctx, prefix+r.key.ID()+"/") {
		if err != nil {
			return nil, err
		}
		if keyID, p, ok := parse(info.Key); ok && keyID == r.key.ID() {
			out[p] = info.ModTime
		}
	}
	return out, nil
}

// loadIndexLocked is LoadIndex with index.refresh held.
func (r *Repo) loadIndexLocked(ctx context.Context, whole bool) error {
	x := &r.index
	x.mu.Lock()
	x.started++
	seq := x.started
	x.mu.Unlock()
	listed, err := r.listPacks(ctx, IndexPrefix, ParseIndexKey)
	if err != nil {
		return fmt.Errorf("list pack indexes: %w", err)
	}
	packs, err := r.listPacks(ctx, PacksPrefix, ParsePackKey)
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	x.mu.RLock()
	var todo []PackID
	for p := range listed {
		if _, ok := packs[p]; !ok {
			delete(listed, p) // an index without its pack
			continue
		}
		if _, ok := x.byPack[p]; !ok && !x.bad[p] {
			todo = append(todo, p)
		}
	}
	x.mu.RUnlock()
	loaded := make([][]PackEntry, len(todo))
	bad := make([]bool, len(todo))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxIndexReads)
	for i, p := range todo {
		g.Go(func() error {
			entries, err := r.readIndex(gctx, p)
			switch {
			case err == nil:
				loaded[i] = entries
			case blob.IsNotFound(err):
			case IsCorrupt(err), errors.Is(err, ErrWrongKey):
				r.log.Warn("backup: ignoring a pack index that does not check out", "index", r.IndexKey(p), "err", err)
				bad[i] = true
			case gctx.Err() != nil:
				return gctx.Err()
			case whole:
				return fmt.Errorf("read pack index %s: %w", p, err)
			default:
				r.log.Warn("backup: a pack index cannot be read; its chunks are not reused this time", "index", r.IndexKey(p), "err", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	gone := map[int32]bool{}
	for i, p := range x.packs {
		// A pack added since this listing began (stored by this process)
		// may be missing from it: kept.
		if _, ok := listed[p.id]; !ok && !p.gone && p.seq < seq {
			gone[int32(i)] = true
		}
	}
	x.forgetLocked(gone)
	for i, p := range todo {
		switch {
		case loaded[i] != nil:
			x.addLocked(p, listed[p], seq, loaded[i])
		case bad[i]:
			if x.bad == nil {
				x.bad = map[PackID]bool{}
			}
			x.bad[p] = true
		}
	}
	x.done = seq
	return nil
}

// addLocked adds pack p's entries (x.mu held). A chunk the index has in
// another pack is pointed at the newer one (a chunk stored again because
// its copy did not check out, or copied by garbage collection: Repack),
// the other kept as an alternative.
func (x *packIndex) addLocked(p PackID, written time.Time, seq uint64, entries []PackEntry) {
	if x.byPack == nil {
		x.byPack, x.byID = map[PackID]int32{}, map[ChunkID]packLoc{}
	}
	if _, ok := x.byPack[p]; ok {
		return
	}
	n := int32(len(x.packs))
	x.packs = append(x.packs, packInfo{id: p, written: written, seq: seq})
	x.byPack[p] = n
	for _, e := range entries {
		l := packLoc{pack: n, offset: e.Offset, length: e.Length}
		old, ok := x.byID[e.ID]
		if !ok {
			x.byID[e.ID] = l
			continue
		}
		if x.alts == nil {
			x.alts = map[ChunkID][]packLoc{}
		}
		if x.newer(old.pack, n) {
			old, l = l, old
		}
		x.byID[e.ID] = l
		x.alts[e.ID] = append(x.alts[e.ID], old)
	}
}

// newer reports whether pack a's copies are preferred to pack b's: a
// later index time, then the greater pack id (every reader breaks a tie
// the same way, whatever order it read the indexes in).
func (x *packIndex) newer(a, b int32) bool {
	pa, pb := x.packs[a], x.packs[b]
	if !pa.written.Equal(pb.written) {
		return pa.written.After(pb.written)
	}
	return bytes.Compare(pa.id[:], pb.id[:]) > 0
}

// forgetLocked drops the chunks of the packs gone (their index is gone,
// or they did not check out), in one pass.
func (x *packIndex) forgetLocked(gone map[int32]bool) {
	if len(gone) == 0 {
		return
	}
	for i := range gone {
		x.packs[i].gone = true
		delete(x.byPack, x.packs[i].id)
	}
	for id, l := range x.byID {
		if !gone[l.pack] {
			continue
		}
		delete(x.byID, id)
		// The newest copy left, if any, takes its place.
		alts := slices.DeleteFunc(x.alts[id], func(a packLoc) bool { return gone[a.pack] })
		if len(alts) > 0 {
			best := 0
			for k, a := range alts {
				if x.newer(a.pack, alts[best].pack) {
					best = k
				}
			}
			x.byID[id] = alts[best]
			alts = slices.Delete(alts, best, best+1)
		}
		if len(alts) == 0 {
			delete(x.alts, id)
		} else {
			x.alts[id] = alts
		}
	}
	for id, alts := range x.alts {
		if alts = slices.DeleteFunc(alts, func(a packLoc) bool { return gone[a.pack] }); len(alts) == 0 {
			delete(x.alts, id)
		} else {
			x.alts[id] = alts
		}
	}
}

// dropPack forgets pack p: its chunks did not check out.
func (r *Repo) dropPack(p PackID) {
	x := &r.index
	x.mu.Lock()
	defer x.mu.Unlock()
	if i, ok := x.byPack[p]; ok {
		x.forgetLocked(map[int32]bool{i: true})
	}
}

// hasPacks reports whether the in-memory index knows any pack.
func (r *Repo) hasPacks() bool {
	r.index.mu.RLock()
	defer r.index.mu.RUnlock()
	return len(r.index.byPack) > 0
}
