package backuprepo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// The manifest of a backup is a root object, manifests/<name> (JSON),
// listing "pieces": ordinary chunks holding the entries as records, in
// path order (comparePaths). A record is an entry or, for a file of more
// than refsPerRecord chunks, a list of more chunk refs continuing the
// entry before it. Version 2 and 3 records are binary (wire_bin.go);
// version 1 records, which a reader still reads, are JSON lines
// (wire_json.go). Version 3 differs from 2 by its new chunk ids: keyed
// BLAKE3 instead of BLAKE2b (both are read, see Repo.hasID), so that a cove
// reading only the older kind refuses the manifest instead of failing on
// its chunks. Version 4 is version 3 written by a writer storing chunks
// in packs (pack.go): its records are the same, and the version makes a
// cove that does not read packs refuse it instead of finding its chunks
// missing.
// Pieces are at most pieceTarget+maxLine bytes and end at a record's end,
// so a reader holds one piece and one entry at a time.
const (
	packedVersion   = 4 // what a Writer storing packs writes: version 3, chunks in packs
	manifestVersion = 3 // what a Writer writes otherwise: binary records, new chunk ids by keyed BLAKE3
	blake2bVersion  = 2 // binary records, chunk ids by BLAKE2b only; read only
	jsonVersion     = 1 // JSON lines, read only
	pieceTarget     = 1 << 20
	maxLine         = 1 << 20
	refsPerRecord   = 8192
	maxNameLen      = 200
)

// Metadata describes a backup: when and why it was taken.
type Metadata struct {
	Time     time.Time `json:"time"`
	Trigger  string    `json:"trigger,omitempty"`  // "stop", "periodic", "manual", …
	Previous string    `json:"previous,omitempty"` // the backup an incremental one reused
}

// Summary counts what a backup holds and what it cost.
type Summary struct {
	Entries      int64         `json:"entries"`
	Files        int64         `json:"files"`
	Bytes        int64         `json:"bytes"`        // content of the files
	BytesNew     int64         `json:"bytesNew"`     // content stored by this backup (before compression)
	BytesReused  int64         `json:"bytesReused"`  // content already stored (dedup or unchanged files)
	ChunksNew    int64         `json:"chunksNew"`    // chunks stored by this backup
	ChunksReused int64         `json:"chunksReused"` // chunks found already stored
	StoredBytes  int64         `json:"storedBytes"`  // bytes written to storage (sealed chunks and manifest)
	Duration     time.Duration `json:"duration"`     // from NewWriter to Commit
}

type root struct {
	Version int        `json:"version"`
	Name    string     `json:"name"`
	Meta    Metadata   `json:"meta"`
	Summary Summary    `json:"summary"`
	Pieces  []ChunkRef `json:"pieces"`
}

// decodeStrict decodes one JSON value, refusing unknown fields and
// trailing data.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// validName checks a backup's name: it becomes the key manifests/<name>.
func validName(name string) error {
	if len(name) > maxNameLen {
		return errdefs.InvalidArgument(fmt.Errorf("backup name %.40q…: more than %d bytes", name, maxNameLen))
	}
	if err := blob.ValidateKey(manifestKey(name)); err != nil {
		return errdefs.InvalidArgument(fmt.Errorf("backup name %q: %w", name, err))
	}
	return nil
}

func manifestKey(name string) string { return "manifests/" + name }

func (s Summary) validate() error {
	switch {
	case s.Entries < 0 || s.Entries > MaxEntries:
		return fmt.Errorf("%d entries, out of range 0 to %d", s.Entries, MaxEntries)
	case s.Files < 0 || s.Files > s.Entries:
		return fmt.Errorf("%d files out of %d entries", s.Files, s.Entries)
	case s.Bytes < 0 || s.Bytes > MaxTotalSize:
		return fmt.Errorf("%d bytes, out of range 0 to %d", s.Bytes, int64(MaxTotalSize))
	}
	return nil
}
