package backuprepo

// Packs. A writer stores its new chunks in packs: objects of about
// packTarget bytes holding many sealed chunks back to back, each sealed
// exactly as a chunk object is (bound to its id, verifiable alone). A
// pack's index, a sealed object of its own, lists the chunks it holds and
// where: so a backup of 46,000 small files is 90 objects to store and to
// read, not 46,000 (one request each on S3; one inode and one scattered
// read each on a local disk, most of a restore's kernel time).
//
//	packs/<id[:2]>/<id>   the sealed chunks, back to back
//	index/<id>            sealed (kind 'i', bound to its key): per chunk,
//	                      its id, offset and length in the pack
//
// A pack's id is random. A pack is stored before its index, and both are
// durable before a manifest naming one of its chunks is written; a pack
// without an index (a writer that died between the two) holds nothing
// anyone reads, and garbage collection removes it. Chunks stored as
// objects of their own (chunks/, before packs) stay readable and are
// reused by writers.
//
// Each Repo keeps the index of every pack in memory (about 80 bytes per
// chunk), read when a writer starts (only the index objects it has not
// read yet) and when a restore asks for a chunk it does not know.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/covedev/cove/internal/blob"
)

const (
	// kindIndex seals a pack's index.
	kindIndex byte = 'i'

	// PacksPrefix and IndexPrefix are where packs and their indexes live.
	PacksPrefix = "packs/"
	IndexPrefix = "index/"

	// packTarget is the size from which a writer stores the pack it fills.
	packTarget = 8 << 20
	// maxPackSize bounds a pack: packTarget and the largest sealed chunk
	// it can end with.
	maxPackSize = packTarget + maxSealed
	// indexEntryLen is an index entry's size: id, offset, length.
	indexEntryLen = 32 + 4 + 4
)

// PackID names a pack (random).
type PackID [32]byte

func (p PackID) String() string { return hex.EncodeToString(p[:]) }

// PackKey returns the store key of pack p of the organization whose key
// id is keyID: packs/<key id>/<id>.
func PackKey(keyID string, p PackID) string { return PacksPrefix + keyID + "/" + p.String() }

// IndexKey returns the store key of pack p's index: index/<key id>/<id>.
func IndexKey(keyID string, p PackID) string { return IndexPrefix + keyID + "/" + p.String() }

// PackKey and IndexKey return the store keys of this repository's pack p
// and of its index.
func (r *Repo) PackKey(p PackID) string  { return PackKey(r.key.ID(), p) }
func (r *Repo) IndexKey(p PackID) string { return IndexKey(r.key.ID(), p) }

// ParsePackKey returns the key id and pack a store key names, or false
// for a key that is not packs/<key id>/<id>.
func ParsePackKey(key string) (string, PackID, bool) { return parseKeyed(key, PacksPrefix) }

// ParseIndexKey returns the key id and pack whose index a store key is,
// or false for a key that is not index/<key id>/<id>.
func ParseIndexKey(key string) (string, PackID, bool) { return parseKeyed(key, IndexPrefix) }

func parseKeyed(key, prefix string) (string, PackID, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", PackID{}, false
	}
	keyID, name, ok := strings.Cut(rest, "/")
	if !ok || len(keyID) != 2*len(Key{}.keyID) || strings.ToLower(keyID) != keyID {
		return "", PackID{}, false
	}
	if _, err := hex.DecodeString(keyID); err != nil {
		return "", PackID{}, false
	}
	p, err := parsePackID(name)
	return keyID, p, err == nil
}

func parsePackID(s string) (PackID, error) {
	id, err := ParseChunkID(s) // the same form: 64 lower-case hex digits
	return PackID(id), err
}

func newPackID() (PackID, error) {
	var p PackID
	if _, err := rand.Read(p[:]); err != nil {
		return p, fmt.Errorf("pack id: %w", err)
	}
	return p, nil
}

// PackEntry is where a pack holds a sealed chunk.
type PackEntry struct {
	ID     ChunkID
	Offset uint32
	Length uint32 // of the sealed chunk
}

// encodeIndex is the payload of a pack's index.
func encodeIndex(entries []PackEntry) []byte {
	b := make([]byte, 0, len(entries)*indexEntryLen)
	for _, e := range entries {
		b = append(b, e.ID[:]...)
		b = binary.BigEndian.AppendUint32(b, e.Offset)
		b = binary.BigEndian.AppendUint32(b, e.Length)
	}
	return b
}

// decodeIndex parses a pack's index: at least one entry, in order of
// offset, none overlapping the next, each the size a sealed chunk can
// have, all within maxPackSize. Anything else is ErrCorrupt.
func decodeIndex(name string, b []byte) ([]PackEntry, error) {
	if len(b) == 0 || len(b)%indexEntryLen != 0 {
		return nil, fmt.Errorf("%s: %d bytes, not a list of %d-byte entries: %w", name, len(b), indexEntryLen, ErrCorrupt)
	}
	entries := make([]PackEntry, len(b)/indexEntryLen)
	var end uint64
	for i := range entries {
		e := &entries[i]
		rec := b[i*indexEntryLen:]
		copy(e.ID[:], rec)
		e.Offset = binary.BigEndian.Uint32(rec[32:])
		e.Length = binary.BigEndian.Uint32(rec[36:])
		switch {
		case e.Length < uint32(minSealed) || e.Length > uint32(maxSealed):
			return nil, fmt.Errorf("%s: entry %d of %d bytes: %w", name, i, e.Length, ErrCorrupt)
		case uint64(e.Offset) < end:
			return nil, fmt.Errorf("%s: entry %d overlaps the one before: %w", name, i, ErrCorrupt)
		}
		end = uint64(e.Offset) + uint64(e.Length)
		if end > maxPackSize {
			return nil, fmt.Errorf("%s: entry %d ends past %d bytes: %w", name, i, maxPackSize, ErrCorrupt)
		}
	}
	return entries, nil
}

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

// alternatives returns the copies of chunk id the index knows (newest
// first) but the one in pack not.
func (r *Repo) alternatives(id ChunkID, not PackID) []Location {
	x := &r.index
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []Location
	add := func(l packLoc) {
		if loc := x.location(l); loc.Pack != not && !x.packs[l.pack].gone {
			out = append(out, loc)
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

// Copies returns every copy of chunk id the index knows, newest first.
func (r *Repo) Copies(id ChunkID) []Location { return r.alternatives(id, PackID{}) }

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

// readIndex reads and opens the index of pack p.
func (r *Repo) readIndex(ctx context.Context, p PackID) ([]PackEntry, error) {
	key := r.IndexKey(p)
	payload, err := r.getSealed(ctx, kindIndex, key)
	if err != nil {
		return nil, err
	}
	return decodeIndex(key, payload)
}

// ReadIndex reads the index of pack p (garbage collection).
func (r *Repo) ReadIndex(ctx context.Context, p PackID) ([]PackEntry, error) {
	return r.readIndex(ctx, p)
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

// maxPackEntries bounds the chunks of a pack: its index (40 bytes each)
// stays well within what an object holds.
const maxPackEntries = 1 << 16

// putPack stores a pack and then its index, and adds it to the in-memory
// index. It returns the bytes stored.
func (r *Repo) putPack(ctx context.Context, p PackID, data []byte, entries []PackEntry) (int64, error) {
	pk, ik := r.PackKey(p), r.IndexKey(p)
	sealed, err := r.key.seal(kindIndex, ik, encodeIndex(entries))
	if err != nil {
		return 0, err
	}
	if err := r.store.Put(ctx, pk, bytes.NewReader(data), int64(len(data))); err != nil {
		return 0, fmt.Errorf("store pack: %w", err)
	}
	if err := r.store.Put(ctx, ik, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return 0, fmt.Errorf("store pack index: %w", err)
	}
	x := &r.index
	x.mu.Lock()
	// Written now, on this machine's clock; a listing under way when it
	// was added does not forget it.
	x.addLocked(p, time.Now(), x.started, entries)
	x.mu.Unlock()
	return int64(len(data) + len(sealed)), nil
}

// Repack copies the chunks of packs that keep says are still needed into
// new packs (of up to packTarget bytes), each chunk verified first, and
// returns the packs it emptied: those each needed chunk of which is now
// in another pack (copied now, once however many candidates hold it, or
// in a pack that is not a candidate already). Garbage collection then
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
	elsewhere := func(id ChunkID) bool {
		for _, l := range r.Copies(id) {
			if !cands[l.Pack] {
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
			if !keep(e.ID) || copied[e.ID] || elsewhere(e.ID) {
				continue
			}
			end := int64(e.Offset) + int64(e.Length)
			if end > int64(len(pack)) {
				r.log.Warn("backup gc: a chunk past its pack's end is not copied; the pack is kept", "pack", r.PackKey(p), "chunk", e.ID)
				whole = false
				continue
			}
			sealed := pack[e.Offset:end]
			if _, err := r.OpenChunk(&SealedChunk{ref: ChunkRef{ID: e.ID}, sealed: sealed}); err != nil {
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

// readPack reads pack p whole (at most maxPackSize bytes).
func (r *Repo) readPack(ctx context.Context, p PackID) ([]byte, error) {
	rc, err := r.store.Get(ctx, r.PackKey(p), blob.Range{})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxPackSize+1))
	if err != nil {
		return nil, fmt.Errorf("read pack %s: %w", p, err)
	}
	if len(data) > maxPackSize {
		return nil, fmt.Errorf("pack %s: more than %d bytes: %w", p, maxPackSize, ErrCorrupt)
	}
	return data, nil
}
