package backuprepo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/errdefs"
)

// The manifest of a backup is a root object, manifests/<name>, listing
// "pieces": ordinary chunks holding the entries as JSON lines, in path
// order (comparePaths). A line is {"e": entry} or, for a file of more than
// refsPerRecord chunks, {"c": [more chunk refs]} continuing the entry
// before it. Pieces are at most pieceTarget+maxLine bytes and end at a
// line's end, so a reader holds one piece and one entry at a time.
const (
	manifestVersion = 1
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

// wireEntry is an Entry as a manifest line holds it. Paths and symlink
// targets that are not valid UTF-8 go in the byte fields (base64), so no
// file name is altered by JSON.
type wireEntry struct {
	P  string            `json:"p,omitempty"`
	PB []byte            `json:"pb,omitempty"`
	T  EntryType         `json:"t"`
	M  uint32            `json:"m,omitempty"`
	U  uint32            `json:"u,omitempty"`
	G  uint32            `json:"g,omitempty"`
	MT int64             `json:"mt,omitempty"`
	CT int64             `json:"ct,omitempty"`
	I  uint64            `json:"i,omitempty"`
	S  int64             `json:"s,omitempty"`
	L  string            `json:"l,omitempty"`
	LB []byte            `json:"lb,omitempty"`
	O  bool              `json:"o,omitempty"`
	X  map[string][]byte `json:"x,omitempty"`
	C  []ChunkRef        `json:"c,omitempty"`
}

type record struct {
	E *wireEntry `json:"e,omitempty"`
	C []ChunkRef `json:"c,omitempty"`
}

func splitString(s string) (string, []byte) {
	if utf8.ValidString(s) {
		return s, nil
	}
	return "", []byte(s)
}

func joinString(s string, b []byte) (string, error) {
	if b == nil {
		return s, nil
	}
	if s != "" || utf8.Valid(b) {
		return "", fmt.Errorf("text given both ways, or valid UTF-8 given as bytes")
	}
	return string(b), nil
}

func toWire(e *Entry, chunks []ChunkRef) *wireEntry {
	w := &wireEntry{T: e.Type, M: e.Mode, U: e.UID, G: e.GID, MT: e.Mtime, CT: e.Ctime, I: e.Inode,
		S: e.Size, O: e.Opaque, X: e.Xattrs, C: chunks}
	w.P, w.PB = splitString(e.Path)
	w.L, w.LB = splitString(e.Target)
	return w
}

func fromWire(w *wireEntry) (*Entry, error) {
	e := &Entry{Type: w.T, Mode: w.M, UID: w.U, GID: w.G, Mtime: w.MT, Ctime: w.CT, Inode: w.I,
		Size: w.S, Opaque: w.O, Xattrs: w.X, Chunks: w.C}
	var err error
	if e.Path, err = joinString(w.P, w.PB); err != nil {
		return nil, fmt.Errorf("path: %v", err)
	}
	if e.Target, err = joinString(w.L, w.LB); err != nil {
		return nil, fmt.Errorf("target: %v", err)
	}
	return e, nil
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
