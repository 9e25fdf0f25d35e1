package backupgc

// Packs (backuprepo/pack.go) are collected whole: a mark condemns a pack
// none of whose chunks a manifest references, or one without an index
// (its writer died between storing the pack and its index: no reader can
// find anything in it), once the pack and its index are older than the
// grace. The sweep reads the pack's index again, keeps the pack when a
// manifest references one of its chunks by then (the manifests scanned
// at the start of the run, and those committed since, as for chunks), and
// deletes the index first, then the pack: a listing that sees the index
// finds the pack.
//
// A pack half of whose bytes are unreferenced chunks, and a small pack
// (the last of each backup), is repacked by the mark: its referenced
// chunks are copied into a new pack (small packs merged), and it is
// condemned. Its sweep then finds every chunk a manifest references in a
// newer pack (the index points readers there) and deletes it; a chunk
// referenced since the mark and not copied keeps it.

import (
	"bytes"
	"context"
	"errors"
	"math"
	"slices"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// packRecord flags a condemned record as a pack's (its id, and its size
// in the low bits): a chunk's stored size never reaches it.
const packRecord = 1 << 31

func (c condemnedChunk) isPack() bool            { return c.Size&packRecord != 0 }
func (c condemnedChunk) size() int64             { return int64(c.Size &^ packRecord) }
func (c condemnedChunk) pack() backuprepo.PackID { return backuprepo.PackID(c.ID) }

// markPacks condemns, for each organization of want, the packs of its key
// that no manifest references a chunk of, older than the grace, repacks
// those worth it, and deletes indexes without a pack.
func (c *Collector) markPacks(ctx context.Context, sc *manifestScan, want map[string]bool, condemned map[string][]condemnedChunk, st *Stats) error {
	for keyID := range want {
		if err := c.markPacksOf(ctx, c.repos[keyID], sc, condemned, st); err != nil {
			return err
		}
	}
	return nil
}

// listed lists the packs (or indexes) of repo's key under prefix;
// anything else there is left and counted.
func (c *Collector) listed(ctx context.Context, repo *backuprepo.Repo, prefix string, parse func(string) (string, backuprepo.PackID, bool), st *Stats) (map[backuprepo.PackID]blob.Info, error) {
	out := map[backuprepo.PackID]blob.Info{}
	for info, err := range c.store.List(ctx, prefix+repo.Key().ID()+"/") {
		if err != nil {
			return nil, err
		}
		keyID, p, ok := parse(info.Key)
		if !ok || keyID != repo.Key().ID() {
			st.Unknown++
			c.leave(info.Key, "its name is no pack id")
			continue
		}
		out[p] = info
	}
	return out, nil
}

func (c *Collector) markPacksOf(ctx context.Context, repo *backuprepo.Repo, sc *manifestScan, condemned map[string][]condemnedChunk, st *Stats) error {
	now := c.opts.Now()
	keyID := repo.Key().ID()
	// Repacking decides from the copies the index knows now.
	if err := repo.LoadIndexWhole(ctx); err != nil {
		return err
	}
	indexes, err := c.listed(ctx, repo, backuprepo.IndexPrefix, backuprepo.ParseIndexKey, st)
	if err != nil {
		return err
	}
	packs, err := c.listed(ctx, repo, backuprepo.PacksPrefix, backuprepo.ParsePackKey, st)
	if err != nil {
		return err
	}
	var repack []repackCandidate
	for p, info := range packs {
		st.Packs++
		index, indexed := indexes[p]
		if now.Sub(info.ModTime) < c.opts.Grace || indexed && now.Sub(index.ModTime) < c.opts.Grace {
			st.Young++
			continue
		}
		// A pack begins with a sealed chunk: its header names the key.
		sealer, _, err := c.sealedBy(ctx, info.Key, "a pack of sealed cove chunks", map[string]bool{keyID: true}, st)
		if err != nil {
			return err
		}
		if sealer != keyID {
			if sealer != "" { // a pack of another key under this one's name
				c.leave(info.Key, "sealed with another key than its name's")
			}
			continue
		}
		if indexed {
			live, total, err := c.packLive(ctx, repo, p, sc.refs.mayHave)
			if err != nil {
				c.log.Warn("backup gc: a pack's index cannot be read; pack kept", "pack", info.Key, "err", err)
				continue
			}
			if live > 0 {
				if total-live >= total/repackDead || info.Size < packSmall {
					repack = append(repack, repackCandidate{id: p, size: info.Size, dead: live < total})
				}
				continue
			}
		}
		if len(condemned[keyID]) < c.opts.MaxCondemned {
			condemned[keyID] = append(condemned[keyID], packCondemned(p, info.Size))
		}
	}
	slices.SortFunc(repack, func(a, b repackCandidate) int { return bytes.Compare(a.id[:], b.id[:]) })
	c.repack(ctx, repo, repack, sc, condemned, st)
	// An index without its pack, older than the grace, is what a writer
	// stalled past a sweep, a crash or a deleted pack left: no reader
	// uses it (LoadIndex needs the pack), and no pack can follow it (a
	// pack is stored before its index). Deleted now.
	for p, info := range indexes {
		if _, ok := packs[p]; ok || now.Sub(info.ModTime) < c.opts.Grace {
			continue
		}
		if err := c.store.Delete(ctx, info.Key); err != nil && !blob.IsNotFound(err) {
			return err
		}
		st.Indexes++
		c.log.Info("backup gc: deleted a pack index without its pack", "index", info.Key)
	}
	return nil
}

// packLive returns the sealed bytes of pack p's chunks that referenced
// says are referenced, and of all its chunks. A pack without an index
// (gone since listed) has none.
func (c *Collector) packLive(ctx context.Context, repo *backuprepo.Repo, p backuprepo.PackID, referenced func(backuprepo.ChunkID) bool) (live, total int64, err error) {
	entries, err := repo.ReadIndex(ctx, p)
	if blob.IsNotFound(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	for _, e := range entries {
		total += int64(e.Length)
		if referenced(e.ID) {
			live += int64(e.Length)
		}
	}
	return live, total, nil
}

const (
	// repackDead: a pack of which at least 1/repackDead of the bytes are
	// unreferenced chunks is repacked.
	repackDead = 2
	// packSmall: packs smaller than this (the last of each backup, and
	// what repacking leaves) are merged by repacking them together.
	packSmall = 2 << 20
	// maxRepack bounds the bytes of packs one mark repacks.
	maxRepack = 1 << 30
)

// repackCandidate is a pack a mark would repack.
type repackCandidate struct {
	id   backuprepo.PackID
	size int64
	dead bool // holds unreferenced chunks
}

func packCondemned(p backuprepo.PackID, size int64) condemnedChunk {
	return condemnedChunk{ID: backuprepo.ChunkID(p), Size: uint32(min(size, math.MaxInt32)) | packRecord}
}

// repack copies the referenced chunks of an organization's candidate
// packs into new packs and condemns the candidates: their sweep, a grace
// later, finds each chunk still needed in a newer pack. A lone small pack
// without unreferenced chunks is left as it is. A failure is logged and
// condemns nothing (copies already made are duplicates, collected once
// unreferenced).
func (c *Collector) repack(ctx context.Context, repo *backuprepo.Repo, cands []repackCandidate, sc *manifestScan, condemned map[string][]condemnedChunk, st *Stats) {
	var total int64
	n := 0
	for n < len(cands) && total+cands[n].size <= maxRepack && len(condemned[repo.Key().ID()])+n < c.opts.MaxCondemned {
		total += cands[n].size
		n++
	}
	cands = cands[:n]
	if len(cands) == 0 || len(cands) == 1 && !cands[0].dead {
		return
	}
	ids := make([]backuprepo.PackID, len(cands))
	for i, cd := range cands {
		ids[i] = cd.id
	}
	emptied, chunks, bytes, err := repo.Repack(ctx, ids, sc.refs.mayHave)
	if err != nil {
		c.log.Warn("backup gc: repacking failed; nothing condemned of it", "keyID", repo.Key().ID(), "packs", len(ids), "err", err)
		return
	}
	keyID := repo.Key().ID()
	for _, cd := range cands {
		if slices.Contains(emptied, cd.id) {
			condemned[keyID] = append(condemned[keyID], packCondemned(cd.id, cd.size))
		}
	}
	st.Repacked += len(emptied)
	st.RepackedBytes += bytes
	c.log.Info("backup gc: repacked", "keyID", keyID, "packs", len(cands), "chunks", chunks, "bytes", bytes)
}

// packChunks maps the chunks of doomed packs to the pack's record, sorted
// by chunk id, so that a manifest committed since the mark keeps the pack.
type packChunk struct {
	id     backuprepo.ChunkID
	record int // in doomed
}

// keepLivePacks marks kept (a zero size) each doomed pack a manifest of
// sc references a chunk of, and returns the chunks of those left.
func (c *Collector) keepLivePacks(ctx context.Context, repo *backuprepo.Repo, doomed []condemnedChunk, sc *manifestScan, condemned condemnedPacks, st *Stats) ([]packChunk, error) {
	if !slices.ContainsFunc(doomed, func(d condemnedChunk) bool { return d.isPack() && d.Size != 0 }) {
		return nil, nil
	}
	if err := repo.LoadIndexWhole(ctx); err != nil {
		return nil, err
	}
	var chunks []packChunk
	for i := range doomed {
		d := &doomed[i]
		if !d.isPack() || d.Size == 0 {
			continue
		}
		entries, err := repo.ReadIndex(ctx, d.pack())
		switch {
		case blob.IsNotFound(err):
		case err != nil:
			if !backuprepo.IsCorrupt(err) && !errors.Is(err, backuprepo.ErrWrongKey) {
				return nil, err
			}
			c.log.Warn("backup gc: a condemned pack's index cannot be read; pack kept", "pack", repo.PackKey(d.pack()), "err", err)
			d.Size = 0
			st.Kept++
			continue
		}
		// A chunk in a newer pack too (repacked, or stored again because
		// this copy did not check out) keeps nothing, unless each newer
		// pack holding it is condemned as well (collectors deciding at
		// once must not each delete the copy the other counted on). An
		// older copy never serves (it may be the damaged one), and a
		// newer one only once read and checked.
		needed := entries[:0]
		for _, e := range entries {
			if !slices.ContainsFunc(repo.NewerCopies(e.ID, d.pack()), func(l backuprepo.Location) bool {
				return condemned.spares(l.Pack) && repo.CheckCopy(ctx, e.ID, l) == nil
			}) {
				needed = append(needed, e)
			}
		}
		if slices.ContainsFunc(needed, func(e backuprepo.PackEntry) bool { return sc.refs.mayHave(e.ID) }) {
			d.Size = 0
			st.Kept++
			continue
		}
		for _, e := range needed {
			chunks = append(chunks, packChunk{id: e.ID, record: i})
		}
	}
	slices.SortFunc(chunks, func(a, b packChunk) int { return bytes.Compare(a.id[:], b.id[:]) })
	return chunks, nil
}

// condemnedPacks is every pack an organization's condemned lists name
// (all of them: due, pending, of this collector or another); unknown when
// a list could not be read, and then no copy counts.
type condemnedPacks struct {
	packs   map[backuprepo.PackID]bool
	unknown bool
}

// spares reports whether pack p can be counted on to hold its chunks.
func (c condemnedPacks) spares(p backuprepo.PackID) bool { return !c.unknown && !c.packs[p] }

// condemnedPacksOf reads the packs every list of gens names.
func condemnedPacksOf(ctx context.Context, repo *backuprepo.Repo, gens []*generation) condemnedPacks {
	out := condemnedPacks{packs: map[backuprepo.PackID]bool{}}
	for _, g := range gens {
		if g.root == nil {
			continue // never acted upon
		}
		cs, err := readGeneration(ctx, repo, g)
		if err != nil {
			out.unknown = true
			continue
		}
		for _, ch := range cs {
			if ch.isPack() {
				out.packs[ch.pack()] = true
			}
		}
	}
	return out
}

// keepPackOf marks kept the doomed pack holding chunk id, if any.
func keepPackOf(chunks []packChunk, doomed []condemnedChunk, id backuprepo.ChunkID, st *Stats) {
	i, _ := slices.BinarySearchFunc(chunks, id, func(p packChunk, id backuprepo.ChunkID) int { return bytes.Compare(p.id[:], id[:]) })
	for ; i < len(chunks) && chunks[i].id == id; i++ {
		if d := &doomed[chunks[i].record]; d.Size != 0 {
			d.Size = 0
			st.Kept++
		}
	}
}

// deleteRecord deletes what a condemned record names: a chunk, or a pack's
// index and then the pack.
func (c *Collector) deleteRecord(ctx context.Context, repo *backuprepo.Repo, d condemnedChunk) error {
	if !d.isPack() {
		return c.store.Delete(ctx, backuprepo.ChunkKey(d.ID))
	}
	if err := c.store.Delete(ctx, repo.IndexKey(d.pack())); err != nil && !blob.IsNotFound(err) {
		return err
	}
	return c.store.Delete(ctx, repo.PackKey(d.pack()))
}
