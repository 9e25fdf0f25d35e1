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
// A pack some of whose chunks are referenced is kept whole, with its
// unreferenced chunks: repacking the live chunks of mostly dead packs
// into new ones is not done yet.

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
// that no manifest references a chunk of, older than the grace.
func (c *Collector) markPacks(ctx context.Context, sc *manifestScan, want map[string]bool, condemned map[string][]condemnedChunk, st *Stats) error {
	now := c.opts.Now()
	indexes := map[backuprepo.PackID]blob.Info{}
	for info, err := range c.store.List(ctx, backuprepo.IndexPrefix) {
		if err != nil {
			return err
		}
		p, ok := backuprepo.ParseIndexKey(info.Key)
		if !ok {
			st.Unknown++
			c.leave(info.Key, "its name is no pack id")
			continue
		}
		indexes[p] = info
	}
	for info, err := range c.store.List(ctx, backuprepo.PacksPrefix) {
		if err != nil {
			return err
		}
		st.Packs++
		p, ok := backuprepo.ParsePackKey(info.Key)
		if !ok {
			st.Unknown++
			c.leave(info.Key, "its name is no pack id")
			continue
		}
		index, indexed := indexes[p]
		if now.Sub(info.ModTime) < c.opts.Grace || indexed && now.Sub(index.ModTime) < c.opts.Grace {
			st.Young++
			continue
		}
		// A pack begins with a sealed chunk: its header names the key.
		h, ok, err := readHeader(ctx, c.store, info.Key)
		if blob.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		switch {
		case !ok || h.Kind != backuprepo.KindChunk:
			st.Unknown++
			c.leave(info.Key, "not a pack of sealed cove chunks")
			continue
		case !want[h.KeyID]:
			if c.repos[h.KeyID] == nil {
				st.Foreign++
			}
			continue
		}
		if indexed {
			live, err := c.packLive(ctx, c.repos[h.KeyID], p, sc.refs.mayHave)
			if err != nil || live {
				if err != nil {
					c.log.Warn("backup gc: a pack's index cannot be read; pack kept", "pack", info.Key, "err", err)
				}
				continue
			}
		}
		if len(condemned[h.KeyID]) < c.opts.MaxCondemned {
			condemned[h.KeyID] = append(condemned[h.KeyID], condemnedChunk{ID: backuprepo.ChunkID(p), Size: uint32(min(info.Size, math.MaxInt32)) | packRecord})
		}
	}
	return nil
}

// packLive reports whether pack p's index lists a chunk referenced says
// is referenced. A pack without an index (gone since listed) is not live.
func (c *Collector) packLive(ctx context.Context, repo *backuprepo.Repo, p backuprepo.PackID, referenced func(backuprepo.ChunkID) bool) (bool, error) {
	entries, err := repo.ReadIndex(ctx, p)
	if blob.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if referenced(e.ID) {
			return true, nil
		}
	}
	return false, nil
}

// packChunks maps the chunks of doomed packs to the pack's record, sorted
// by chunk id, so that a manifest committed since the mark keeps the pack.
type packChunk struct {
	id     backuprepo.ChunkID
	record int // in doomed
}

// keepLivePacks marks kept (a zero size) each doomed pack a manifest of
// sc references a chunk of, and returns the chunks of those left.
func (c *Collector) keepLivePacks(ctx context.Context, repo *backuprepo.Repo, doomed []condemnedChunk, sc *manifestScan, st *Stats) ([]packChunk, error) {
	var chunks []packChunk
	for i := range doomed {
		d := &doomed[i]
		if !d.isPack() {
			continue
		}
		entries, err := repo.ReadIndex(ctx, d.pack())
		switch {
		case blob.IsNotFound(err):
		case err != nil:
			if !backuprepo.IsCorrupt(err) && !errors.Is(err, backuprepo.ErrWrongKey) {
				return nil, err
			}
			c.log.Warn("backup gc: a condemned pack's index cannot be read; pack kept", "pack", backuprepo.PackKey(d.pack()), "err", err)
			d.Size = 0
			st.Kept++
			continue
		}
		if slices.ContainsFunc(entries, func(e backuprepo.PackEntry) bool { return sc.refs.mayHave(e.ID) }) {
			d.Size = 0
			st.Kept++
			continue
		}
		for _, e := range entries {
			chunks = append(chunks, packChunk{id: e.ID, record: i})
		}
	}
	slices.SortFunc(chunks, func(a, b packChunk) int { return bytes.Compare(a.id[:], b.id[:]) })
	return chunks, nil
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
func (c *Collector) deleteRecord(ctx context.Context, d condemnedChunk) error {
	if !d.isPack() {
		return c.store.Delete(ctx, backuprepo.ChunkKey(d.ID))
	}
	if err := c.store.Delete(ctx, backuprepo.IndexKey(d.pack())); err != nil && !blob.IsNotFound(err) {
		return err
	}
	return c.store.Delete(ctx, backuprepo.PackKey(d.pack()))
}
