package backuprepo

// What garbage collection (internal/backupgc) needs from the repository,
// and the writers' half of its protocol.
//
// Garbage collection deletes chunks no manifest references. A writer that
// finds a chunk already stored skips its upload and references it in a
// manifest it commits later, so a sweep running meanwhile could delete a
// chunk the new manifest needs. The protocol that prevents it:
//
//   - A sweep first writes a sweep marker (gc/<key id>/sweeps/<id>, sealed),
//     then lists the manifests, then deletes (for at most MaxSweepDuration
//     after writing the marker), then rewrites the marker to record its end.
//   - A writer commits its manifest, then lists the markers (CommitGCSafe).
//     If a sweep was running at any time since the writer started, the
//     writer deletes its manifest and fails with ErrSwept (retryable): its
//     chunks may have been deleted under it.
//
// Either the sweep's listing sees the manifest (and keeps its chunks) or
// the writer's listing sees the marker (and the backup is refused): the
// storage's listings are consistent after a write (a local directory, and
// S3 since 2020). Times are compared on the storage's clock only (the
// modification times of the marker and of the manifest, less the writer's
// own monotonic duration), so the clocks of servers and runners need not
// agree. Markers are kept MarkerRetention, which is why a writer older
// than MaxWriterAge refuses to commit.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

const (
	// kindGC seals garbage collection state (condemned lists, sweep
	// markers): never mistaken for a chunk or a manifest.
	kindGC byte = 'g'

	// HeaderLen is the length of a sealed object's header: "CVB1", its
	// kind and the key id.
	HeaderLen = headerLen

	// ChunksPrefix and ManifestsPrefix are where chunks and manifest roots
	// live in the store.
	ChunksPrefix    = "chunks/"
	ManifestsPrefix = "manifests/"
	// GCPrefix holds garbage collection state, per key id.
	GCPrefix = "gc/"

	// MaxWriterAge bounds how long a backup may take from NewWriter to
	// CommitGCSafe: an older one is refused (sweep markers are not kept
	// forever).
	MaxWriterAge = 12 * time.Hour
	// MaxSweepDuration bounds how long after writing its marker a sweep
	// may delete: a marker without an end (its collector crashed) stops
	// concerning writers after it.
	MaxSweepDuration = 30 * time.Minute
	// MarkerRetention is how long a sweep marker is kept after it was
	// last written.
	MarkerRetention = 2 * MaxWriterAge
	// storageTimePrecision covers the storage's rounding of modification
	// times (S3: whole seconds).
	storageTimePrecision = 2 * time.Second
)

// ErrSwept is the cause of a commit refused because garbage collection
// deleted chunks while the backup was being taken: taking it again is safe
// and succeeds (category Unavailable: retry).
var ErrSwept = errdefs.Unavailable(errors.New("the backup storage was garbage collected while this backup was taken; take it again"))

// ErrWriterTooOld is the cause of a commit refused because the backup took
// longer than MaxWriterAge (FailedPrecondition).
var ErrWriterTooOld = errdefs.FailedPrecondition(fmt.Errorf("backup took longer than %v, the most garbage collection allows; take it again", MaxWriterAge))

// Key returns the repository's key.
func (r *Repo) Key() *Key { return r.key }

// Store returns the repository's store.
func (r *Repo) Store() blob.Store { return r.store }

// Pieces returns the chunk references of the manifest's pieces (its
// entries are stored as chunks too, which a collector must keep).
func (m *ManifestReader) Pieces() []ChunkRef { return slices.Clone(m.root.Pieces) }

// Name returns the backup's name.
func (m *ManifestReader) Name() string { return m.name }

// ChunkKey returns the store key of the chunk id.
func ChunkKey(id ChunkID) string { return id.key() }

// ParseChunkKey returns the chunk id a store key names, or false for a key
// that is not chunks/<id[:2]>/<id>.
func ParseChunkKey(key string) (ChunkID, bool) {
	rest, ok := strings.CutPrefix(key, ChunksPrefix)
	if !ok {
		return ChunkID{}, false
	}
	dir, name, ok := strings.Cut(rest, "/")
	if !ok || len(dir) != 2 {
		return ChunkID{}, false
	}
	id, err := ParseChunkID(name)
	if err != nil || !strings.HasPrefix(name, dir) {
		return ChunkID{}, false
	}
	return id, true
}

// ManifestName returns the backup name of a manifest root's store key.
func ManifestName(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, ManifestsPrefix)
	return name, ok && validName(name) == nil
}

// ManifestKey returns the store key of the backup name's manifest root.
func ManifestKey(name string) string { return manifestKey(name) }

// Header is what a sealed object's header says, readable without its key.
type Header struct {
	Kind  byte   // 'c' chunk, 'm' manifest, 'g' garbage collection state
	KeyID string // hex, as Key.ID
}

// Kinds of sealed objects, as Header.Kind says them.
const (
	KindChunk    = kindChunk
	KindManifest = kindManifest
)

// ParseHeader parses the first HeaderLen bytes of a sealed object; false
// when they are not a cove backup object's.
func ParseHeader(b []byte) (Header, bool) {
	if len(b) < headerLen || string(b[:len(magic)]) != magic {
		return Header{}, false
	}
	kind := b[len(magic)]
	if kind != kindChunk && kind != kindManifest && kind != kindGC {
		return Header{}, false
	}
	return Header{Kind: kind, KeyID: fmt.Sprintf("%x", b[len(magic)+1:headerLen])}, true
}

// gcKey returns the store key of the garbage collection object rel of
// this repository's key.
func (r *Repo) gcKey(rel string) string { return GCPrefix + r.key.ID() + "/" + rel }

// GCKey returns the store key of the garbage collection object rel of this
// repository's key: gc/<key id>/<rel>.
func (r *Repo) GCKey(rel string) string { return r.gcKey(rel) }

// PutGCObject seals payload (at most MaxPayload bytes) under this
// repository's key and stores it as gc/<key id>/<rel>.
func (r *Repo) PutGCObject(ctx context.Context, rel string, payload []byte) error {
	key := r.gcKey(rel)
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	sealed, err := r.key.seal(kindGC, key, payload)
	if err != nil {
		return err
	}
	if err := r.store.Put(ctx, key, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// GetGCObject reads and opens gc/<key id>/<rel>: blob.ErrNotFound when
// missing, ErrCorrupt when it does not authenticate.
func (r *Repo) GetGCObject(ctx context.Context, rel string) ([]byte, error) {
	return r.getSealed(ctx, kindGC, r.gcKey(rel))
}

// getSealed reads the object key and opens it as sealed of kind under
// its key's name.
func (r *Repo) getSealed(ctx context.Context, kind byte, key string) ([]byte, error) {
	rc, err := r.store.Get(ctx, key, blob.Range{})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	sealed, err := readSealed(key, rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	return r.key.open(kind, key, sealed)
}

// SweepMarker records a sweep of garbage collection: writers that were
// running while it deleted must not commit. Start, Deadline and End are
// the collector's clock, for people; what writers compare is Stored.
type SweepMarker struct {
	ID       string    `json:"id"`
	Start    time.Time `json:"start"`
	Deadline time.Time `json:"deadline"`
	End      time.Time `json:"end,omitzero"` // zero while the sweep runs (or after its collector crashed)
	// Stored is when the marker was last written, on the storage's clock
	// (its modification time): the sweep's start, or its end once End is
	// set.
	Stored time.Time `json:"-"`
}

// Until returns, on the storage's clock, when the sweep stopped deleting,
// or will have at the latest.
func (m SweepMarker) Until() time.Time {
	if m.End.IsZero() {
		return m.Stored.Add(MaxSweepDuration)
	}
	return m.Stored
}

const sweepsDir = "sweeps/"

// PutSweepMarker writes (or rewrites) the marker m.
func (r *Repo) PutSweepMarker(ctx context.Context, m SweepMarker) error {
	if err := validName(m.ID); err != nil || strings.Contains(m.ID, "/") {
		return errdefs.InvalidArgument(fmt.Errorf("sweep marker id %q invalid", m.ID))
	}
	doc, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("sweep marker: %w", err)
	}
	return r.PutGCObject(ctx, sweepsDir+m.ID, doc)
}

// DeleteSweepMarker deletes the marker id.
func (r *Repo) DeleteSweepMarker(ctx context.Context, id string) error {
	return r.store.Delete(ctx, r.gcKey(sweepsDir+id))
}

// SweepMarkers returns this key's sweep markers. A marker that does not
// authenticate was not written by a collector holding the key: it is
// logged and ignored.
func (r *Repo) SweepMarkers(ctx context.Context) ([]SweepMarker, error) {
	var out []SweepMarker
	prefix := r.gcKey(sweepsDir)
	for info, err := range r.store.List(ctx, prefix) {
		if err != nil {
			return nil, fmt.Errorf("list sweep markers: %w", err)
		}
		rel := strings.TrimPrefix(info.Key, GCPrefix+r.key.ID()+"/")
		doc, err := r.GetGCObject(ctx, rel)
		if blob.IsNotFound(err) {
			continue // deleted since listed
		}
		if err != nil {
			if IsCorrupt(err) || errors.Is(err, ErrWrongKey) {
				r.log.Warn("ignoring a sweep marker that does not authenticate", "key", info.Key, "err", err)
				continue
			}
			return nil, err
		}
		var m SweepMarker
		if err := decodeStrict(doc, &m); err != nil || m.ID != strings.TrimPrefix(info.Key, prefix) {
			r.log.Warn("ignoring a malformed sweep marker", "key", info.Key, "err", err)
			continue
		}
		m.Stored = info.ModTime
		out = append(out, m)
	}
	return out, nil
}

// Started returns when the writer was created.
func (w *Writer) Started() time.Time { return w.start }

// CommitGCSafe commits like Commit, under garbage collection's protocol:
// it refuses a writer older than MaxWriterAge, and after writing the
// manifest it looks for a sweep that ran since the writer started; if one
// did (or the markers cannot be read), it deletes the manifest again and
// fails with ErrSwept: the backup must be taken again, preferably under a
// new name (a collector that read the refused manifest notices one
// rewritten under its name only by its time and size). Writers use it
// instead of Commit whenever garbage collection may run on the store.
func (w *Writer) CommitGCSafe(ctx context.Context) (Summary, error) {
	if age := time.Since(w.start); age > MaxWriterAge {
		return Summary{}, fmt.Errorf("backup %q (started %v ago): %w", w.name, age.Round(time.Second), ErrWriterTooOld)
	}
	sum, err := w.Commit(ctx)
	if err != nil {
		return sum, err
	}
	// When the writer started, on the storage's clock: the manifest's
	// time less the writer's age (monotonic), rounded down.
	info, err := w.repo.store.Stat(ctx, manifestKey(w.name))
	started := info.ModTime.Add(-time.Since(w.start) - storageTimePrecision)
	var markers []SweepMarker
	if err == nil {
		markers, err = w.repo.SweepMarkers(ctx)
	}
	if err == nil {
		for _, m := range markers {
			if !m.Until().Add(storageTimePrecision).Before(started) {
				err = fmt.Errorf("backup %q: sweep %s ran from %s: %w", w.name, m.ID, m.Start.UTC().Format(time.RFC3339), ErrSwept)
				break
			}
		}
	} else {
		err = fmt.Errorf("backup %q: %w: %w", w.name, ErrSwept, err)
	}
	if err != nil {
		if derr := w.repo.store.Delete(context.WithoutCancel(ctx), manifestKey(w.name)); derr != nil {
			return Summary{}, errors.Join(err, fmt.Errorf("delete the refused manifest: %w", derr))
		}
		return Summary{}, err
	}
	return sum, nil
}
