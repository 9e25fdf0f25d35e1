package backupgc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
)

// refSet is the set of chunks the manifests reference, held as the first 8
// bytes of each id in a sorted slice: 8 bytes per distinct chunk, 14 with
// the slack of its growth and the batch being added (TestRefSetMemory
// measures it; a Go map took 28), about twice that for the instant it
// grows. Two ids sharing their first 8
// bytes only make an unreferenced chunk look referenced, so it is kept: a
// prefix can make the collector keep garbage, never delete a chunk in use.
// Ids are keyed MACs, uniformly distributed: with 10 million chunks
// referenced, the chance that a given garbage chunk is kept by mistake is
// 10⁷/2⁶⁴ ≈ 5·10⁻¹³.
type refSet struct {
	sorted []uint64 // sorted, no duplicates
	batch  []uint64 // added since the last merge
}

const minBatch = 1 << 16

func prefixOf(id backuprepo.ChunkID) uint64 { return binary.BigEndian.Uint64(id[:8]) }

func (s *refSet) add(id backuprepo.ChunkID) {
	s.batch = append(s.batch, prefixOf(id))
	if len(s.batch) >= max(minBatch, len(s.sorted)/4) {
		s.merge()
	}
}

// merge sorts the batch and merges it into sorted, in place from the end.
func (s *refSet) merge() {
	if len(s.batch) == 0 {
		return
	}
	slices.Sort(s.batch)
	b := slices.Compact(s.batch)
	n, m := len(s.sorted), len(b)
	if cap(s.sorted) < n+m {
		grown := make([]uint64, n, n+m+(n+m)/4)
		copy(grown, s.sorted)
		s.sorted = grown
	}
	s.sorted = s.sorted[:n+m]
	i, j, k := n-1, m-1, n+m-1
	for j >= 0 {
		if i >= 0 && s.sorted[i] > b[j] {
			s.sorted[k] = s.sorted[i]
			i--
		} else {
			s.sorted[k] = b[j]
			j--
		}
		k--
	}
	s.sorted = slices.Compact(s.sorted)
	s.batch = s.batch[:0]
}

func (s *refSet) len() int {
	s.merge()
	return len(s.sorted)
}

// mayHave reports whether id may be referenced (false: it certainly is not).
func (s *refSet) mayHave(id backuprepo.ChunkID) bool {
	s.merge()
	_, ok := slices.BinarySearch(s.sorted, prefixOf(id))
	return ok
}

// manifestScan is what reading every manifest found.
type manifestScan struct {
	refs *refSet
	// seen holds the manifests read (or found foreign) as listed, so a
	// sweep reads again only those committed since, or written again
	// under the same name (a refused backup retried).
	seen map[string]blob.Info
	// broken holds the key ids of organizations with a manifest that
	// could not be read: their references are unknown, so nothing of
	// theirs is condemned or deleted this run.
	broken map[string]error
	stats  Stats
}

// readHeader reads the header of the object key; ok is false when it is
// not a cove backup object.
func readHeader(ctx context.Context, store blob.Store, key string) (backuprepo.Header, bool, error) {
	rc, err := store.Get(ctx, key, blob.Range{Length: int64(backuprepo.HeaderLen)})
	if err != nil {
		return backuprepo.Header{}, false, err
	}
	defer rc.Close()
	buf := make([]byte, backuprepo.HeaderLen)
	n, err := io.ReadFull(rc, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return backuprepo.Header{}, false, fmt.Errorf("read %s: %w", key, err)
	}
	h, ok := backuprepo.ParseHeader(buf[:n])
	return h, ok, nil
}

// errGone: the manifest was deleted between its listing and its reading.
var errGone = errors.New("manifest deleted since listed")

// scanManifest reads the manifest root at key, if it belongs to one of
// repos, and adds everything it references to add. It returns whether the
// manifest was ours (its key id), and an error when it was ours but could
// not be read whole.
func (c *Collector) scanManifest(ctx context.Context, repos map[string]*backuprepo.Repo, info blob.Info, add func(string, backuprepo.ChunkID), st *Stats, orphans bool) (keyID string, err error) {
	key := info.Key
	h, ok, err := readHeader(ctx, c.store, key)
	if blob.IsNotFound(err) {
		return "", errGone // deleted since listed
	}
	if err != nil {
		return "", err
	}
	name, valid := backuprepo.ManifestName(key)
	if !ok || h.Kind != backuprepo.KindManifest || !valid {
		st.Unknown++
		c.leave(key, "not a cove manifest")
		return "", nil
	}
	repo := repos[h.KeyID]
	if repo == nil {
		st.ForeignManifests++
		return "", nil
	}
	if orphans && c.orphan(h.KeyID, name, info.ModTime) {
		if err := c.store.Delete(ctx, key); err != nil {
			return "", fmt.Errorf("delete orphan manifest %s: %w", key, err)
		}
		st.Orphans++
		c.log.Info("backup gc: deleted a manifest no backup record names", "key", key, "written", info.ModTime, "keyID", h.KeyID)
		return "", nil
	}
	m, err := repo.OpenManifest(ctx, name)
	if blob.IsNotFound(err) {
		return "", errGone
	}
	if err != nil {
		return h.KeyID, fmt.Errorf("manifest %s: %w", key, err)
	}
	for _, p := range m.Pieces() {
		add(h.KeyID, p.ID)
	}
	for {
		e, err := m.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return h.KeyID, fmt.Errorf("manifest %s: %w", key, err)
		}
		for _, c := range e.Chunks {
			add(h.KeyID, c.ID)
		}
	}
	st.Manifests++
	return h.KeyID, nil
}

// maxLeftLogged bounds the objects a run names in its log as left alone
// (the count is in Stats).
const maxLeftLogged = 10

// leave logs an object left alone because it is not cove's.
func (c *Collector) leave(key, why string) {
	c.left++
	switch {
	case c.left <= maxLeftLogged:
		c.log.Warn("backup gc: leaving an object that is not cove's", "key", key, "why", why)
	case c.left == maxLeftLogged+1:
		c.log.Warn("backup gc: more objects that are not cove's left alone; not named (see the run's count)")
	}
}

// scanManifests reads every manifest of the store.
func (c *Collector) scanManifests(ctx context.Context) (*manifestScan, error) {
	sc := &manifestScan{refs: &refSet{}, seen: map[string]blob.Info{}, broken: map[string]error{}}
	add := func(_ string, id backuprepo.ChunkID) { sc.refs.add(id) }
	for info, err := range c.store.List(ctx, backuprepo.ManifestsPrefix) {
		if err != nil {
			return nil, fmt.Errorf("list manifests: %w", err)
		}
		keyID, err := c.scanManifest(ctx, c.repos, info, add, &sc.stats, true)
		if err == errGone {
			continue // not seen: read again should it come back
		}
		if err != nil {
			if ctx.Err() != nil || keyID == "" {
				return nil, err
			}
			// Ours, but unreadable: this organization's references are
			// unknown, so none of its chunks is condemned or deleted.
			c.log.Error("backup gc: a manifest cannot be read; no chunk of its organization is collected until it is repaired or its backup deleted",
				"key", info.Key, "keyID", keyID, "err", err)
			sc.broken[keyID] = err
		}
		sc.seen[info.Key] = info
	}
	return sc, nil
}
