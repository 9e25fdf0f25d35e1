package backuprepo

// Packs. A writer stores its new chunks in packs: objects of about
// packTarget bytes holding many sealed chunks back to back, each sealed
// exactly as a chunk object is (bound to its id, verifiable alone). A
// pack's index, a sealed object of its own, lists the chunks it holds and
// where: so a backup of 46,000 small files is 90 objects to store and to
// read, not 46,000 (one request each on S3; one inode and one scattered
// read each on a local disk, most of a restore's kernel time).
//
//	packs/<key id>/<id>   the sealed chunks, back to back
//	index/<key id>/<id>   sealed (kind 'i', bound to its key): per chunk,
//	                      its id, offset and length in the pack
//
// A pack's id is random. A pack is stored before its index, and both are
// durable before a manifest naming one of its chunks is written; a pack
// without an index (a writer that died between the two) holds nothing
// anyone reads, and garbage collection removes it. Chunks stored as
// objects of their own (chunks/, before packs) stay readable and are
// reused by writers.
//
// Each Repo keeps the index of every pack in memory (packindex.go), and
// garbage collection repacks packs half unreferenced (repack.go).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

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

// entryOf returns the sealed chunk entry e lists in pack p (read whole),
// once checked: within the pack, and opening to a chunk with its id.
func (r *Repo) entryOf(p PackID, pack []byte, e PackEntry) ([]byte, error) {
	end := int64(e.Offset) + int64(e.Length)
	if end > int64(len(pack)) {
		return nil, fmt.Errorf("pack %s: %d bytes, its index lists chunk %s up to %d: %w", p, len(pack), e.ID, end, ErrCorrupt)
	}
	sealed := pack[e.Offset:end]
	if _, err := r.OpenChunk(&SealedChunk{ref: ChunkRef{ID: e.ID}, sealed: sealed}); err != nil {
		return nil, err
	}
	return sealed, nil
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
