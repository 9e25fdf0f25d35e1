package backuprepo

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/blake2b"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// ChunkID names a chunk: the BLAKE2b-256 MAC of its plaintext under the
// organization's MAC key. Without the key it reveals nothing of the
// content (not even whether two organizations store the same file).
type ChunkID [32]byte

func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// key is the chunk's blob key.
func (id ChunkID) key() string {
	s := id.String()
	return "chunks/" + s[:2] + "/" + s
}

// ParseChunkID parses the hex form of a chunk id.
func ParseChunkID(s string) (ChunkID, error) {
	var id ChunkID
	if len(s) != 2*len(id) {
		return id, errdefs.InvalidArgument(fmt.Errorf("chunk id %.80q: %d characters, want %d", s, len(s), 2*len(id)))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil || strings.ToLower(s) != s {
		return id, errdefs.InvalidArgument(fmt.Errorf("chunk id %.80q: not lower-case hex", s))
	}
	return id, nil
}

// ChunkRef is a reference to a chunk and its plaintext size. Its text
// form (in manifests) is "<hex id>:<size>".
type ChunkRef struct {
	ID   ChunkID
	Size uint32
}

func (r ChunkRef) String() string {
	return r.ID.String() + ":" + strconv.FormatUint(uint64(r.Size), 10)
}

// MarshalText implements encoding.TextMarshaler.
func (r ChunkRef) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; the size must be
// between 1 and MaxChunkSize.
func (r *ChunkRef) UnmarshalText(b []byte) error {
	id, size, ok := strings.Cut(string(b), ":")
	if !ok {
		return errdefs.InvalidArgument(fmt.Errorf("chunk reference %.80q: want <id>:<size>", b))
	}
	var err error
	if r.ID, err = ParseChunkID(id); err != nil {
		return err
	}
	n, err := strconv.ParseUint(size, 10, 32)
	if err != nil || n == 0 || n > MaxChunkSize || strconv.FormatUint(n, 10) != size {
		return errdefs.InvalidArgument(fmt.Errorf("chunk reference %.80q: size must be 1 to %d", b, MaxChunkSize))
	}
	r.Size = uint32(n)
	return nil
}

// Repo is a backup repository on a blob.Store under one organization key.
// It is safe for concurrent use.
type Repo struct {
	store blob.Store
	key   *Key
	log   *slog.Logger

	crashMu sync.Mutex // guards trusted and epoch
	trusted bool       // stored chunks modified since epoch are whole: no crash since they were written (crash.go)
	epoch   time.Time

	index packIndex   // pack.go
	packs atomic.Bool // writers store new chunks in packs (SetPacks)

	ownMu    sync.Mutex // guards ownKnown and own
	ownKnown bool
	own      bool // the store holds chunk objects of their own (written before packs)
}

// New returns the repository of store sealed under key.
func New(store blob.Store, key *Key, log *slog.Logger) *Repo {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Repo{store: store, key: key, log: log}
	r.packs.Store(true)
	return r
}

// ChunkIDOf returns the id a chunk of this content has: its keyed BLAKE3
// hash (256 bits) under the id key.
func (r *Repo) ChunkIDOf(data []byte) ChunkID {
	h, _ := blake3.NewKeyed(r.key.ids[:]) // a 32-byte key never fails
	h.Write(data)
	var id ChunkID
	h.Sum(id[:0])
	return id
}

// oldChunkIDOf is the id a chunk had before manifest version 3: its
// BLAKE2b-256 MAC under another key. Chunks stored under such ids stay
// referenced by older backups, and by newer ones that reused an unchanged
// file's chunk list.
func (r *Repo) oldChunkIDOf(data []byte) ChunkID {
	h, _ := blake2b.New256(r.key.mac[:]) // a 32-byte key never fails
	h.Write(data)
	var id ChunkID
	h.Sum(id[:0])
	return id
}

// hasID reports whether data is the content of chunk id, under either
// kind of id. Accepting both keeps what the check is for: only a holder
// of the key computes either, and neither can be matched by other content.
func (r *Repo) hasID(data []byte, id ChunkID) bool {
	return r.ChunkIDOf(data) == id || r.oldChunkIDOf(data) == id
}

// PutChunk stores data (at most MaxChunkSize bytes) as a chunk unless a
// chunk of the same content is already stored. It returns the chunk's
// reference, whether it was stored now, and how many bytes it took in the
// store (0 when it was there).
func (r *Repo) PutChunk(ctx context.Context, data []byte) (ref ChunkRef, stored int64, err error) {
	if len(data) == 0 || len(data) > MaxChunkSize {
		return ChunkRef{}, 0, errdefs.InvalidArgument(fmt.Errorf("chunk of %d bytes: must be 1 to %d", len(data), MaxChunkSize))
	}
	return r.putChunk(ctx, r.ChunkIDOf(data), data)
}

// SetPacks says whether writers store new chunks in packs (pack.go, the
// default) or as objects of their own, as cove did before packs (and
// tests of such repositories do). Either way every chunk is readable,
// and a chunk stored either way is reused.
func (r *Repo) SetPacks(on bool) { r.packs.Store(on) }

// putChunk is PutChunk of data whose id is known.
func (r *Repo) putChunk(ctx context.Context, id ChunkID, data []byte) (ref ChunkRef, stored int64, err error) {
	ref = ChunkRef{ID: id, Size: uint32(len(data))}
	if _, written, ok := r.locate(id); ok {
		if ok, err := r.storedWhole(ctx, ref, written); err != nil || ok {
			return ref, 0, err
		}
	}
	key := ref.ID.key()
	if info, err := r.store.Stat(ctx, key); err == nil && info.Size >= int64(minSealed) {
		ok, err := r.storedWhole(ctx, ref, info.ModTime)
		if err != nil {
			return ref, 0, err
		}
		if ok {
			return ref, 0, nil
		}
	} else if err == nil {
		// Shorter than any sealed object: the empty file a crash can leave
		// of an object written without fsync (localblob.BatchedSync) before
		// its Sync. Store it again rather than reuse it.
		r.log.Warn("backup: a stored chunk is truncated; storing it again", "chunk", key, "size", info.Size)
	} else if !blob.IsNotFound(err) {
		return ref, 0, fmt.Errorf("store chunk: %w", err)
	}
	sealed, err := r.key.seal(kindChunk, ref.ID.String(), data)
	if err != nil {
		return ref, 0, err
	}
	if err := r.store.Put(ctx, key, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return ref, 0, fmt.Errorf("store chunk: %w", err)
	}
	return ref, int64(len(sealed)), nil
}

// findStored reports whether the repository holds chunk ref, whole (see
// storedWhole): in a pack its index lists, or as an object of its own.
func (r *Repo) findStored(ctx context.Context, ref ChunkRef) (bool, error) {
	if _, written, ok := r.locate(ref.ID); ok {
		return r.storedWhole(ctx, ref, written)
	}
	own, err := r.hasOwnChunks(ctx)
	if err != nil || !own {
		return false, err
	}
	info, err := r.store.Stat(ctx, ref.ID.key())
	switch {
	case err == nil && info.Size >= int64(minSealed):
		return r.storedWhole(ctx, ref, info.ModTime)
	case err == nil, blob.IsNotFound(err):
		return false, nil // a truncated object (see putChunk) is stored again, packed
	default:
		return false, fmt.Errorf("store chunk: %w", err)
	}
}

// hasOwnChunks reports whether the store holds any chunk stored as an
// object of its own (by a cove before packs, or PutChunk): only then is a
// chunk the packs' index does not list asked about in the store.
func (r *Repo) hasOwnChunks(ctx context.Context) (bool, error) {
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	if r.ownKnown {
		return r.own, nil
	}
	for _, err := range r.store.List(ctx, ChunksPrefix) {
		if err != nil {
			return false, fmt.Errorf("list chunks: %w", err)
		}
		r.own = true
		break
	}
	r.ownKnown = true
	return r.own, nil
}

// storedWhole reports whether a chunk the store holds can be reused. On a
// store whose objects are durable only once synced (blob.Syncer: a
// directory written without an fsync per object), a crash before the sync
// can leave an object of plausible size with content that never reached
// the disk; no committed manifest names it, but reusing it would make the
// next backup name it. So there a chunk is read and verified before it is
// reused (a local read, and only for content already stored), and stored
// again when it does not check out — unless the store's crash markers
// vouch for it: no such crash since the chunk was written, or the chunks
// written before one were checked (checkCrashed). Elsewhere (S3: a PUT is durable when it returns) its
// presence is enough.
func (r *Repo) storedWhole(ctx context.Context, ref ChunkRef, written time.Time) (bool, error) {
	if _, batched := r.store.(blob.Syncer); !batched {
		return true, nil
	}
	r.crashMu.Lock()
	trusted := r.trusted && !written.Before(r.epoch)
	r.crashMu.Unlock()
	if trusted {
		return true, nil
	}
	_, err := r.GetChunk(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case blob.IsNotFound(err):
		return false, nil // deleted since found (garbage collected)
	case IsCorrupt(err):
		r.log.Warn("backup: a stored chunk does not check out (written before a crash?); storing it again", "chunk", ref.ID.key(), "err", err)
		return false, nil
	default:
		return false, fmt.Errorf("store chunk: verify the stored copy: %w", err)
	}
}

// GetChunk reads, authenticates and decrypts the chunk ref names, and
// checks that its content has that id and size. A missing chunk is
// blob.ErrNotFound; one that does not check out is ErrCorrupt (or
// ErrWrongKey).
func (r *Repo) GetChunk(ctx context.Context, ref ChunkRef) ([]byte, error) {
	sc, err := r.FetchChunk(ctx, ref)
	if err != nil {
		return nil, err
	}
	return r.OpenChunkOrCopy(ctx, sc)
}

// OpenChunkOrCopy is OpenChunk, and when the chunk read from a pack does
// not check out, the other copies the index knows of it (a copy stored
// again, or repacked) are read and opened in turn: the first that checks
// out is returned, else the first error.
func (r *Repo) OpenChunkOrCopy(ctx context.Context, sc *SealedChunk) ([]byte, error) {
	data, err := r.OpenChunk(sc)
	if err == nil || !IsCorrupt(err) || !sc.from.Packed {
		return data, err
	}
	var opened []byte
	if r.otherCopy(ctx, sc.ref, sc.from.Pack, func(other *SealedChunk) bool {
		var oerr error
		opened, oerr = r.OpenChunk(other)
		return oerr == nil
	}) == nil {
		return nil, err
	}
	r.log.Warn("backup: a chunk's copy does not check out; read another", "chunk", sc.ref.ID, "pack", sc.from.Pack, "err", err)
	return opened, nil
}

// otherCopy fetches chunk ref from the copies the index knows besides the
// one in pack not, in turn, and returns the first that fetches and that
// ok accepts; nil when none does.
func (r *Repo) otherCopy(ctx context.Context, ref ChunkRef, not PackID, ok func(*SealedChunk) bool) *SealedChunk {
	for _, l := range r.alternatives(ref.ID, not) {
		if other, err := r.fetchPacked(ctx, ref, l); err == nil && ok(other) {
			return other
		}
	}
	return nil
}

// SealedChunk is a chunk's object as stored, read but not opened.
type SealedChunk struct {
	ref    ChunkRef
	sealed []byte
	from   Location // where it was read (Packed false: an object of its own)
}

// FetchChunk reads the object of the chunk ref names: the part of
// GetChunk that waits for the store. A caller fetching many chunks (a
// restore) keeps many fetches in flight and opens them on as many
// goroutines as there are CPUs. A missing chunk is blob.ErrNotFound; an
// object larger than ref's size can take sealed is ErrCorrupt, and no
// more of it is read.
func (r *Repo) FetchChunk(ctx context.Context, ref ChunkRef) (*SealedChunk, error) {
	name := ref.ID.String()
	for again := true; ; again = false {
		if l, _, ok := r.locate(ref.ID); ok {
			sc, err := r.fetchPacked(ctx, ref, l)
			if IsCorrupt(err) {
				// The pack is shorter than its index says, or the entry
				// too long for the chunk: another copy, if any.
				if other := r.otherCopy(ctx, ref, l.Pack, func(*SealedChunk) bool { return true }); other != nil {
					return other, nil
				}
			}
			if err == nil || !blob.IsNotFound(err) || !again {
				return sc, err
			}
			// The pack is gone: garbage collection moved the chunk to
			// another one since the index was read.
		} else {
			rc, err := r.store.Get(ctx, ref.ID.key(), blob.Range{})
			if err == nil {
				defer rc.Close()
				return sealedFrom(rc, ref)
			}
			if !blob.IsNotFound(err) || !again {
				return nil, fmt.Errorf("chunk %s: %w", name, err)
			}
			// Not an object of its own: in a pack stored since the index
			// was read, or never read.
		}
		// Read after the miss: a listing begun since serves it.
		if err := r.refreshIndex(ctx, r.indexSeq()); err != nil {
			return nil, fmt.Errorf("chunk %s: %w", name, err)
		}
	}
}

// fetchPacked reads chunk ref's sealed form from its pack.
func (r *Repo) fetchPacked(ctx context.Context, ref ChunkRef, l Location) (*SealedChunk, error) {
	if ref.Size != 0 && l.Length > int64(sealedHint(ref.Size)) {
		return nil, fmt.Errorf("chunk %s: %d bytes in its pack, more than its size takes sealed: %w", ref.ID, l.Length, ErrCorrupt)
	}
	rc, err := r.store.Get(ctx, r.PackKey(l.Pack), blob.Range{Offset: l.Offset, Length: l.Length})
	if errors.Is(err, blob.ErrRangeNotSatisfiable) {
		return nil, fmt.Errorf("chunk %s: pack %s ends before it: %w", ref.ID, l.Pack, ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", ref.ID, err)
	}
	defer rc.Close()
	b := make([]byte, l.Length)
	if _, err := io.ReadFull(rc, b); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, fmt.Errorf("chunk %s: pack %s ends before it: %w", ref.ID, l.Pack, ErrCorrupt)
		}
		return nil, fmt.Errorf("chunk %s: read pack %s: %w", ref.ID, l.Pack, err)
	}
	return &SealedChunk{ref: ref, sealed: b, from: l}, nil
}

// sealedFrom reads the object of chunk ref from rd.
func sealedFrom(rd io.Reader, ref ChunkRef) (*SealedChunk, error) {
	sealed, err := readSealedSized("chunk "+ref.ID.String(), rd, sealedHint(ref.Size))
	if err != nil {
		return nil, err
	}
	return &SealedChunk{ref: ref, sealed: sealed}, nil
}

// chunkFrom is GetChunk of the object read from rd.
func (r *Repo) chunkFrom(rd io.Reader, ref ChunkRef) ([]byte, error) {
	sc, err := sealedFrom(rd, ref)
	if err != nil {
		return nil, err
	}
	return r.OpenChunk(sc)
}

// OpenChunk authenticates, decrypts and decompresses a fetched chunk and
// checks that its content has its id and size: the CPU's part of
// GetChunk. A chunk that does not check out is ErrCorrupt (or
// ErrWrongKey).
func (r *Repo) OpenChunk(sc *SealedChunk) ([]byte, error) {
	ref, name := sc.ref, sc.ref.ID.String()
	data, err := r.key.open(kindChunk, name, sc.sealed)
	if err != nil {
		return nil, fmt.Errorf("chunk %w", err)
	}
	if !r.hasID(data, ref.ID) {
		return nil, fmt.Errorf("chunk %s: content has id %s: %w", name, r.ChunkIDOf(data), ErrCorrupt)
	}
	if ref.Size != 0 && len(data) != int(ref.Size) {
		return nil, fmt.Errorf("chunk %s: %d bytes, the manifest says %d: %w", name, len(data), ref.Size, ErrCorrupt)
	}
	return data, nil
}

// sealedHint is about the most a chunk of size bytes takes sealed (zstd's
// worst case framing of incompressible data, the header, nonce and tag),
// and one byte more: what to read it into at once. 0 (size unknown) reads
// as readSealed does.
func sealedHint(size uint32) int {
	if size == 0 {
		return 0
	}
	return min(int(size)+int(size)/64+1024+1, maxSealed+1)
}

// readSealedSized is readSealed into a buffer of hint bytes: a chunk is
// read in one read(2) and one more to see its end, instead of a series of
// reads into a growing buffer. An object larger than hint-1 bytes is
// corrupt, and no more of it is read: a restore admits a chunk by the
// manifest's size (backupfs's byte budget), so an object larger than that
// size can take sealed, put there by whoever can write the bucket, must
// not make each of its workers hold the largest chunk (REV-S8-2).
func readSealedSized(name string, r io.Reader, hint int) ([]byte, error) {
	if hint <= 0 {
		return readSealed(name, r)
	}
	limit := min(hint-1, maxSealed)
	b := make([]byte, 0, hint)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > limit {
			return nil, fmt.Errorf("%s: more than %d bytes, the most its size takes sealed: %w", name, limit, ErrCorrupt)
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
	}
}
