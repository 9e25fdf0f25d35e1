package backuprepo

import (
	"fmt"
	"unicode/utf8"
)

// Version 1 manifests (written by cove before the binary records of
// version 2) hold JSON lines: {"e": entry} or {"c": [chunk refs]}, each
// chunk ref "<hex id>:<size>". A reader still reads them, so backups taken
// before remain restorable and serve as the previous backup of an
// incremental one.

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

func joinString(s string, b []byte) (string, error) {
	if b == nil {
		return s, nil
	}
	if s != "" || utf8.Valid(b) {
		return "", fmt.Errorf("text given both ways, or valid UTF-8 given as bytes")
	}
	return string(b), nil
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

// decodeJSONRecord decodes a version 1 line: an entry, or refs continuing
// the entry before it.
func decodeJSONRecord(line []byte) (*Entry, []ChunkRef, error) {
	var rec record
	if err := decodeStrict(line, &rec); err != nil {
		return nil, nil, err
	}
	switch {
	case rec.E != nil && rec.C == nil:
		e, err := fromWire(rec.E)
		return e, nil, err
	case rec.E == nil && len(rec.C) > 0:
		return nil, rec.C, nil
	}
	return nil, nil, fmt.Errorf("a line holds one entry or one chunk list")
}
