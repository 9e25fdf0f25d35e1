// Package backupgc removes what backups no longer need from the backup
// storage: backups past their retention (retention.go, Job) and chunks no
// manifest references (Collector), safely while backups are being taken.
//
// # Garbage collection of chunks: mark, then sweep a grace later
//
// A run of the Collector, for every organization whose key it holds:
//
//  1. reads every manifest (roots, pieces, entries) into the set of
//     referenced chunks;
//  2. sweeps each condemned list marked at least Grace ago: writes a sweep
//     marker, lists the manifests again and reads those committed since
//     step 1, then deletes each condemned chunk still unreferenced, and
//     records the sweep's end in the marker;
//  3. marks, when no list is waiting for its sweep: lists the chunks and
//     condemns those referenced by no manifest, last written more than
//     Grace ago, and whose header carries the organization's key id;
//  4. deletes sweep markers written more than backuprepo.MarkerRetention
//     ago.
//
// Writers commit with backuprepo.Writer.CommitGCSafe, which refuses a
// backup taken while a sweep ran (see backuprepo/gcsupport.go): so a
// writer that reused a condemned chunk either committed before the sweep
// listed the manifests (the chunk is kept) or is refused and takes its
// backup again. The grace keeps chunks of backups in progress out of the
// condemned lists, and gives writers that reuse a condemned chunk time to
// commit before the sweep, so refusals stay rare: only backups running
// during the few seconds of a sweep's deletions are refused.
//
// Objects under chunks/ that are not cove chunks, and chunks sealed with a
// key the collector does not hold (another organization's, or a key the
// server could not read), are left where they are and counted.
package backupgc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
	"golang.org/x/sync/errgroup"
)

// Defaults of Options.
const (
	DefaultGrace        = time.Hour
	DefaultMaxCondemned = 1 << 20
	DefaultSweepTimeout = backuprepo.MaxSweepDuration - 5*time.Minute
)

// Options tune a Collector; zero values take the defaults.
type Options struct {
	// Grace: a chunk is condemned only if written at least this long
	// ago, and swept at least this long after it was condemned.
	Grace time.Duration
	// MaxCondemned bounds a condemned list (36 bytes per chunk in memory
	// and storage); what is left is condemned by a later run.
	MaxCondemned int
	// SweepTimeout bounds how long a sweep deletes (writers running until
	// then are refused); at most backuprepo.MaxSweepDuration less 5
	// minutes for the deletes in flight.
	SweepTimeout time.Duration
	// Records, when set for an organization's key id, are the names of
	// its backups the server has records of: a manifest of that key
	// named by none of them and written more than OrphanGrace ago (a
	// backup whose report never reached the server, or whose refused
	// commit could not be withdrawn) is deleted. Without Records for a
	// key, no manifest of it is.
	Records     map[string]map[string]bool
	OrphanGrace time.Duration
	Now         func() time.Time
	Log         *slog.Logger
}

// Stats counts what a run found and did.
type Stats struct {
	Manifests        int // manifests read (of the organizations collected)
	ForeignManifests int // manifests sealed with a key the collector does not hold
	Chunks           int // chunk objects listed
	Packs            int // pack objects listed
	Repacked         int // packs whose referenced chunks a mark copied into new packs (and condemned)
	RepackedBytes    int64
	Indexes          int // pack indexes without their pack deleted
	Young            int // unreferenced chunks younger than the grace
	Condemned        int // chunks condemned by this run's mark
	Swept            int // chunks deleted
	SweptBytes       int64
	Kept             int // condemned chunks referenced again by the time of the sweep
	Foreign          int // unreferenced chunks sealed with a key the collector does not hold
	Unknown          int // objects under chunks/ or manifests/ that are not cove's
	Markers          int // sweep markers deleted after their retention
	Orphans          int // manifests deleted for want of a record
}

// Collector collects the chunks of the organizations whose keys it holds.
type Collector struct {
	store blob.Store
	repos map[string]*backuprepo.Repo // by key id
	opts  Options
	log   *slog.Logger
	left  int // objects left alone, for leave
}

// NewCollector returns a collector of store for the organizations keys.
func NewCollector(store blob.Store, keys []*backuprepo.Key, opts Options) *Collector {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.MaxCondemned <= 0 {
		opts.MaxCondemned = DefaultMaxCondemned
	}
	if opts.SweepTimeout <= 0 || opts.SweepTimeout > DefaultSweepTimeout {
		opts.SweepTimeout = DefaultSweepTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	c := &Collector{store: store, repos: map[string]*backuprepo.Repo{}, opts: opts, log: opts.Log}
	for _, k := range keys {
		c.repos[k.ID()] = backuprepo.New(store, k, opts.Log)
	}
	return c
}

// orphan reports whether the manifest name of key keyID, written at
// written, is an orphan to delete.
func (c *Collector) orphan(keyID, name string, written time.Time) bool {
	names, ok := c.opts.Records[keyID]
	return ok && !names[name] && c.opts.OrphanGrace > 0 && c.opts.Now().Sub(written) > c.opts.OrphanGrace
}

// Run does one pass: sweeps the condemned lists that are due, marks a new
// one for each organization without a pending one, and deletes old sweep
// markers. It is safe to run on several servers at once (deletes are
// idempotent; each mark writes a list of its own).
func (c *Collector) Run(ctx context.Context) (Stats, error) {
	if len(c.repos) == 0 {
		return Stats{}, nil
	}
	sc, err := c.scanManifests(ctx)
	if err != nil {
		return Stats{}, err
	}
	st := sc.stats
	var errs []error
	needMark := map[string]bool{}
	for keyID, repo := range c.repos {
		if sc.broken[keyID] != nil {
			continue
		}
		pending, err := c.sweepDue(ctx, repo, sc, &st)
		if err != nil {
			if ctx.Err() != nil {
				return st, err
			}
			errs = append(errs, fmt.Errorf("organization key %s: %w", keyID, err))
			continue
		}
		if !pending {
			needMark[keyID] = true
		}
		if err := c.dropOldMarkers(ctx, repo, &st); err != nil {
			errs = append(errs, fmt.Errorf("organization key %s: %w", keyID, err))
		}
	}
	if len(needMark) > 0 {
		if err := c.mark(ctx, sc, needMark, &st); err != nil {
			errs = append(errs, err)
		}
	}
	for keyID, err := range sc.broken {
		errs = append(errs, fmt.Errorf("organization key %s not collected: %w", keyID, err))
	}
	return st, errors.Join(errs...)
}

// sweepDue sweeps repo's condemned lists marked Grace ago or more, and
// reports whether a list is still waiting for its sweep.
func (c *Collector) sweepDue(ctx context.Context, repo *backuprepo.Repo, sc *manifestScan, st *Stats) (pending bool, err error) {
	gens, err := listGenerations(ctx, repo)
	if err != nil {
		return false, err
	}
	now := c.opts.Now()
	var condemned *condemnedPacks
	for _, g := range gens {
		switch {
		case g.root == nil:
			// A list whose writer crashed (or is still writing): removed
			// once surely abandoned; never swept.
			if now.Sub(g.newest) > c.opts.Grace {
				if err := deleteGeneration(ctx, repo, g); err != nil {
					return pending, err
				}
			}
		case now.Sub(g.root.MarkedAt) < c.opts.Grace:
			pending = true
		default:
			if condemned == nil {
				cp := condemnedPacksOf(ctx, repo, gens)
				condemned = &cp
			}
			if err := c.sweep(ctx, repo, g, sc, *condemned, st); err != nil {
				return pending, err
			}
		}
	}
	return pending, nil
}

// sweep deletes the chunks of the condemned list g that no manifest
// references now.
func (c *Collector) sweep(ctx context.Context, repo *backuprepo.Repo, g *generation, sc *manifestScan, condemned condemnedPacks, st *Stats) error {
	cs, err := readGeneration(ctx, repo, g)
	if err != nil {
		c.log.Warn("backup gc: dropping a condemned list that cannot be read", "list", g.name, "err", err)
		return deleteGeneration(ctx, repo, g)
	}
	// The list, filtered in place and sorted by id: 36 bytes per chunk.
	doomed := cs[:0]
	for _, ch := range cs {
		if sc.refs.mayHave(ch.ID) {
			st.Kept++
		} else {
			doomed = append(doomed, ch)
		}
	}
	slices.SortFunc(doomed, func(a, b condemnedChunk) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	doomed = slices.CompactFunc(doomed, func(a, b condemnedChunk) bool { return a.ID == b.ID })
	// Packs kept by what the scan found: no sweep marker (no writer
	// refused) when nothing is left to delete.
	if _, err := c.keepLivePacks(ctx, repo, doomed, sc, condemned, st); err != nil {
		return err
	}
	if slices.ContainsFunc(doomed, func(d condemnedChunk) bool { return d.Size != 0 }) {
		packs := func() ([]packChunk, error) { return c.keepLivePacks(ctx, repo, doomed, sc, condemned, st) }
		if err := c.deleteUnreferenced(ctx, repo, g.name, doomed, packs, sc, st); err != nil {
			return err
		}
	}
	return deleteGeneration(ctx, repo, g)
}

// deleteParallelism is how many deletes a sweep has in flight.
const deleteParallelism = 16

// deleteUnreferenced deletes doomed (sorted by id) under a sweep marker,
// after dropping from it what manifests committed since the scan
// reference (marked kept by a zero size: a stored chunk is never empty),
// a doomed pack's chunks (packed) included.
func (c *Collector) deleteUnreferenced(ctx context.Context, repo *backuprepo.Repo, gen string, doomed []condemnedChunk, packs func() ([]packChunk, error), sc *manifestScan, st *Stats) error {
	start := c.opts.Now()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	marker := backuprepo.SweepMarker{ID: gen + "-" + hex.EncodeToString(rnd[:]), Start: start, Deadline: start.Add(c.opts.SweepTimeout)}
	if err := repo.PutSweepMarker(ctx, marker); err != nil {
		return err
	}
	defer func() {
		marker.End = c.opts.Now()
		if err := repo.PutSweepMarker(context.WithoutCancel(ctx), marker); err != nil {
			c.log.Warn("backup gc: cannot record the end of a sweep (writers until its deadline will be refused)", "marker", marker.ID, "err", err)
		}
	}()
	// Nothing is deleted more than MaxSweepDuration after the marker was
	// stored (the timeout counts from when its write returned).
	dctx, cancel := context.WithTimeout(ctx, c.opts.SweepTimeout)
	defer cancel()
	// The doomed packs' indexes, read again now that the marker is
	// written: an index stored since the first reading (a writer stalled
	// between its pack and its index) names chunks a manifest committed
	// before the marker may need.
	packed, err := packs()
	if err != nil {
		return fmt.Errorf("sweep %s: %w", gen, err)
	}
	// Manifests committed since the scan: the marker is written, so any
	// manifest not listed now is refused by its writer.
	for info, err := range c.store.List(dctx, backuprepo.ManifestsPrefix) {
		if err != nil {
			return fmt.Errorf("sweep %s: list manifests: %w", gen, err)
		}
		if was, ok := sc.seen[info.Key]; ok && was.ModTime.Equal(info.ModTime) && was.Size == info.Size {
			continue
		}
		var ignored Stats
		_, err := c.scanManifest(dctx, map[string]*backuprepo.Repo{repo.Key().ID(): repo}, info, func(_ string, id backuprepo.ChunkID) {
			i, ok := slices.BinarySearchFunc(doomed, id, func(c condemnedChunk, id backuprepo.ChunkID) int { return bytes.Compare(c.ID[:], id[:]) })
			if ok && doomed[i].Size != 0 {
				doomed[i].Size = 0
				st.Kept++
			}
			keepPackOf(packed, doomed, id, st)
		}, &ignored, false)
		if err == errGone {
			continue
		}
		if err != nil {
			return fmt.Errorf("sweep %s: a new manifest cannot be read, nothing deleted: %w", gen, err)
		}
	}
	var (
		eg      errgroup.Group
		mu      sync.Mutex
		deleted int
		freed   int64
	)
	eg.SetLimit(deleteParallelism)
	todo := 0
	for _, ch := range doomed {
		if ch.Size == 0 {
			continue
		}
		if dctx.Err() != nil {
			break
		}
		todo++
		eg.Go(func() error {
			if err := c.deleteRecord(dctx, repo, ch); err != nil {
				return err
			}
			mu.Lock()
			deleted++
			freed += ch.size()
			mu.Unlock()
			return nil
		})
	}
	err = eg.Wait()
	if err == nil {
		err = dctx.Err()
	}
	st.Swept += deleted
	st.SweptBytes += freed
	if err != nil {
		return fmt.Errorf("sweep %s: %d of %d unreferenced chunks deleted: %w", gen, deleted, todo, err)
	}
	c.log.Info("backup gc: swept unreferenced chunks", "keyID", repo.Key().ID(), "list", gen, "deleted", deleted, "bytes", freed)
	return nil
}

// mark condemns, for each organization of want, the chunks no manifest
// references, older than the grace and sealed with its key, and the packs
// none of whose chunks one does (packs.go).
func (c *Collector) mark(ctx context.Context, sc *manifestScan, want map[string]bool, st *Stats) error {
	now := c.opts.Now()
	condemned := map[string][]condemnedChunk{}
	for info, err := range c.store.List(ctx, backuprepo.ChunksPrefix) {
		if err != nil {
			return fmt.Errorf("list chunks: %w", err)
		}
		st.Chunks++
		id, ok := backuprepo.ParseChunkKey(info.Key)
		if !ok {
			st.Unknown++
			c.leave(info.Key, "its name is no chunk id")
			continue
		}
		if sc.refs.mayHave(id) {
			continue
		}
		if now.Sub(info.ModTime) < c.opts.Grace {
			st.Young++
			continue
		}
		keyID, ours, err := c.sealedBy(ctx, info.Key, "a sealed cove chunk", want, st)
		if err != nil {
			return err
		}
		if ours && len(condemned[keyID]) < c.opts.MaxCondemned {
			condemned[keyID] = append(condemned[keyID], condemnedChunk{ID: id, Size: uint32(min(info.Size, math.MaxUint32))})
		}
	}
	if err := c.markPacks(ctx, sc, want, condemned, st); err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	var errs []error
	for keyID, cs := range condemned {
		gen := newGenerationName(now)
		if err := writeGeneration(ctx, c.repos[keyID], gen, now, cs); err != nil {
			errs = append(errs, fmt.Errorf("organization key %s: write condemned list: %w", keyID, err))
			continue
		}
		st.Condemned += len(cs)
		c.log.Info("backup gc: condemned unreferenced chunks", "keyID", keyID, "list", gen, "chunks", len(cs), "sweepAfter", now.Add(c.opts.Grace))
	}
	return errors.Join(errs...)
}

// sealedBy reads the header of the object key (a chunk, or a pack: its
// first chunk's) and returns the key id it was sealed with, and whether
// that is the key of an organization of want. Anything else is left and
// counted: not what (unknown), or another organization's (foreign); an
// object gone since listed is neither.
func (c *Collector) sealedBy(ctx context.Context, key, what string, want map[string]bool, st *Stats) (string, bool, error) {
	h, ok, err := readHeader(ctx, c.store, key)
	if blob.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	switch {
	case !ok || h.Kind != backuprepo.KindChunk:
		st.Unknown++
		c.leave(key, "not "+what)
		return "", false, nil
	case !want[h.KeyID]:
		if c.repos[h.KeyID] == nil {
			st.Foreign++
		}
		return h.KeyID, false, nil
	}
	return h.KeyID, true, nil
}

// dropOldMarkers deletes sweep markers past their retention.
func (c *Collector) dropOldMarkers(ctx context.Context, repo *backuprepo.Repo, st *Stats) error {
	markers, err := repo.SweepMarkers(ctx)
	if err != nil {
		return err
	}
	now := c.opts.Now()
	for _, m := range markers {
		if now.Sub(m.Stored) > backuprepo.MarkerRetention {
			if err := repo.DeleteSweepMarker(ctx, m.ID); err != nil {
				return err
			}
			st.Markers++
		}
	}
	return nil
}
