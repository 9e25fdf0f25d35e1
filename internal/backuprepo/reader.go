package backuprepo

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/covedev/cove/internal/blob"
)

// ManifestReader reads a backup's entries in order, one piece in memory at
// a time, and checks every entry (Entry.Validate, order, counts against
// the root). Any violation is ErrCorrupt naming the backup: a manifest
// that passes authentication but breaks the rules (written by a buggy or
// compromised holder of the key) is refused, not trusted.
type ManifestReader struct {
	repo *Repo
	ctx  context.Context
	name string
	root root
	// decode decodes a record of root.Version: an entry, or refs
	// continuing the entry before it.
	decode func([]byte) (*Entry, []ChunkRef, error)

	next    int    // index of the next piece to load
	piece   []byte // rest of the current piece
	pending *Entry // entry read, waiting for continuation records
	last    string
	any     bool
	entries int64
	files   int64
	bytes   int64
	done    bool
}

// OpenManifest opens the backup name. A missing backup is blob.ErrNotFound.
func (r *Repo) OpenManifest(ctx context.Context, name string) (*ManifestReader, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	key := manifestKey(name)
	rc, err := r.store.Get(ctx, key, blob.Range{})
	if err != nil {
		return nil, fmt.Errorf("backup %q: %w", name, err)
	}
	sealed, err := readSealed("backup "+name, rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	doc, err := r.key.open(kindManifest, key, sealed)
	if err != nil {
		return nil, fmt.Errorf("backup %q: %w", name, err)
	}
	return r.parseRoot(ctx, name, doc)
}

func (r *Repo) parseRoot(ctx context.Context, name string, doc []byte) (*ManifestReader, error) {
	m := &ManifestReader{repo: r, ctx: ctx, name: name}
	if err := decodeStrict(doc, &m.root); err != nil {
		return nil, m.corrupt("manifest: %v", err)
	}
	switch m.root.Version {
	case packedVersion, manifestVersion, blake2bVersion:
		m.decode = decodeBinRecord
	case jsonVersion:
		m.decode = decodeJSONRecord
	default:
		return nil, m.corrupt("manifest version %d, this cove reads %d to %d", m.root.Version, jsonVersion, packedVersion)
	}
	if m.root.Name != name {
		return nil, m.corrupt("manifest of backup %.100q", m.root.Name)
	}
	if err := m.root.Summary.validate(); err != nil {
		return nil, m.corrupt("%v", err)
	}
	return m, nil
}

func (m *ManifestReader) corrupt(format string, args ...any) error {
	return fmt.Errorf("backup %q: %s: %w", m.name, fmt.Sprintf(format, args...), ErrCorrupt)
}

// WithContext makes the reader load its further pieces under ctx instead
// of OpenManifest's (a backup reading its previous one on a goroutine of
// its own stops it with its own context). Not safe while Next runs.
func (m *ManifestReader) WithContext(ctx context.Context) { m.ctx = ctx }

// Metadata returns the backup's metadata.
func (m *ManifestReader) Metadata() Metadata { return m.root.Meta }

// Summary returns the backup's summary as its writer recorded it.
func (m *ManifestReader) Summary() Summary { return m.root.Summary }

// Buffered reports whether what is left of the piece being read holds a
// record: if not, Next loads the next piece from the store (or ends).
func (m *ManifestReader) Buffered() bool { return len(m.piece) > 0 }

// Next returns the next entry, or io.EOF after the last one (once the
// counts are checked against the root).
func (m *ManifestReader) Next() (*Entry, error) {
	if m.done {
		return nil, io.EOF
	}
	for {
		line, err := m.line()
		if err == io.EOF {
			if m.pending != nil {
				return m.emit()
			}
			m.done = true
			if m.entries != m.root.Summary.Entries || m.files != m.root.Summary.Files || m.bytes != m.root.Summary.Bytes {
				return nil, m.corrupt("%d entries, %d files, %d bytes where the manifest announces %d, %d, %d (truncated?)",
					m.entries, m.files, m.bytes, m.root.Summary.Entries, m.root.Summary.Files, m.root.Summary.Bytes)
			}
			return nil, io.EOF
		}
		if err != nil {
			m.done = true
			return nil, err
		}
		e, refs, err := m.decode(line)
		if err != nil {
			return nil, m.fail("entry %d: %v", m.entries+1, err)
		}
		if e != nil {
			prev := m.pending
			m.pending = e
			if prev != nil {
				return m.finish(prev)
			}
			continue
		}
		p := m.pending
		if p == nil || p.Type != TypeFile {
			return nil, m.fail("chunk list continues no file")
		}
		if int64(len(p.Chunks)+len(refs)) > p.Size/MinChunkSize+1 || len(p.Chunks)+len(refs) > MaxFileSize/MinChunkSize+1 {
			return nil, m.fail("entry %q: more chunks than its size allows", p.Path)
		}
		p.Chunks = append(p.Chunks, refs...)
	}
}

func (m *ManifestReader) emit() (*Entry, error) {
	e := m.pending
	m.pending = nil
	return m.finish(e)
}

// finish checks a complete entry and counts it.
func (m *ManifestReader) finish(e *Entry) (*Entry, error) {
	if err := e.Validate(); err != nil {
		return nil, m.fail("%v", err)
	}
	if m.any && comparePaths(m.last, e.Path) >= 0 {
		return nil, m.fail("entry %q after %q: out of order or repeated", e.Path, m.last)
	}
	m.last, m.any = e.Path, true
	m.entries++
	if e.Type == TypeFile {
		m.files++
		m.bytes += e.Size
	}
	if m.entries > m.root.Summary.Entries || m.bytes > m.root.Summary.Bytes {
		return nil, m.fail("more entries or bytes than the manifest announces")
	}
	return e, nil
}

func (m *ManifestReader) fail(format string, args ...any) error {
	m.done = true
	return m.corrupt(format, args...)
}

// line returns the next record (a version 1 line without its newline),
// loading pieces as needed.
func (m *ManifestReader) line() ([]byte, error) {
	for len(m.piece) == 0 {
		if m.next >= len(m.root.Pieces) {
			return nil, io.EOF
		}
		ref := m.root.Pieces[m.next]
		data, err := m.repo.GetChunk(m.ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("backup %q: manifest piece %d of %d: %w", m.name, m.next+1, len(m.root.Pieces), err)
		}
		if len(data) == 0 {
			return nil, m.fail("manifest piece %d is empty", m.next+1)
		}
		if m.root.Version == jsonVersion && data[len(data)-1] != '\n' {
			return nil, m.fail("manifest piece %d does not end a line", m.next+1)
		}
		m.next++
		m.piece = data
	}
	if m.root.Version != jsonVersion {
		body, rest, err := nextRecord(m.piece)
		if err != nil {
			return nil, m.fail("manifest piece %d: %v", m.next, err)
		}
		m.piece = rest
		return body, nil
	}
	i := bytes.IndexByte(m.piece, '\n')
	line := m.piece[:i]
	m.piece = m.piece[i+1:]
	if len(line)+1 > maxLine {
		return nil, m.fail("line of %d bytes, more than %d", len(line), maxLine)
	}
	return line, nil
}
