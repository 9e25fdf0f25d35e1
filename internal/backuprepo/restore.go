package backuprepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/covedev/cove/internal/blob"
)

// FileStat is what an incremental backup compares to decide that a file
// is unchanged without reading it.
type FileStat struct {
	Size  int64
	Mtime int64 // Unix nanoseconds
	Ctime int64 // Unix nanoseconds
	Inode uint64
}

// Unchanged reports whether a file whose previous entry is prev and whose
// current stat is cur can reuse prev's chunk list without being read: the
// same size, mtime, ctime and inode. ctime changes with any write or
// metadata change, and cannot be set by a user, so a file rewritten with
// its old mtime restored is still read again.
func Unchanged(prev *Entry, cur FileStat) bool {
	return prev != nil && prev.Type == TypeFile && prev.Ctime != 0 &&
		prev.Size == cur.Size && prev.Mtime == cur.Mtime && prev.Ctime == cur.Ctime && prev.Inode == cur.Inode
}

// Previous looks up entries of a previous backup while the next one walks
// the tree in the same order: memory stays one entry, whatever the size
// of the backup.
type Previous struct {
	m   *ManifestReader
	cur *Entry
	err error
}

// NewPrevious returns a lookup over m (nil for a first backup).
func NewPrevious(m *ManifestReader) *Previous { return &Previous{m: m} }

// Find returns the previous backup's entry for path, or nil. Calls must
// come in walk order (the order of Writer.Add). An error reading the
// previous manifest is returned once; after it, Find returns nil (the
// files are then read again, which is safe).
func (p *Previous) Find(path string) (*Entry, error) {
	if p == nil || p.m == nil {
		return nil, nil
	}
	for {
		if p.cur == nil {
			e, err := p.m.Next()
			if err != nil {
				p.m = nil
				if err == io.EOF {
					return nil, nil
				}
				return nil, err
			}
			p.cur = e
		}
		switch c := comparePaths(p.cur.Path, path); {
		case c == 0:
			return p.cur, nil
		case c > 0:
			return nil, nil
		}
		p.cur = nil
	}
}

// ReadFile writes the content of the file entry e to w, chunk by chunk,
// each checked (memory: one chunk). A missing or corrupt chunk fails with
// an error naming the file and the chunk, after what precedes it was
// written.
//
// A chunk repeated back to back (the zeros of a sparse image) is fetched
// and opened once; w is then given the same slice again.
func (r *Repo) ReadFile(ctx context.Context, e *Entry, w io.Writer) error {
	var last ChunkRef
	var data []byte
	for i, ref := range e.Chunks {
		if data == nil || ref != last {
			var err error
			if data, err = r.GetChunk(ctx, ref); err != nil {
				return fmt.Errorf("restore %q: chunk %d of %d: %w", e.Path, i+1, len(e.Chunks), err)
			}
			last = ref
		} else if err := ctx.Err(); err != nil {
			return fmt.Errorf("restore %q: %w", e.Path, err)
		}
		if _, err := w.Write(data); err != nil {
			return fmt.Errorf("restore %q: %w", e.Path, err)
		}
	}
	return nil
}

// maxPathsPerProblem bounds the paths a CheckReport lists for one chunk.
const maxPathsPerProblem = 100

// ChunkProblem is a chunk a backup needs that is missing or corrupt, and
// the files that need it.
type ChunkProblem struct {
	Chunk ChunkRef
	Err   error
	Paths []string // at most maxPathsPerProblem, in order
	More  int      // how many more files need it
}

// CheckReport is what Check found.
type CheckReport struct {
	Files    int64 // files checked
	Chunks   int64 // distinct chunks checked
	Damaged  int64 // files needing a missing or corrupt chunk
	Problems []ChunkProblem
	Complete bool // every file can be restored
	Summary  Summary
	Metadata Metadata
}

// Check reads the manifest of backup name and checks that every chunk it
// needs is there (deep: read back and verified), reporting each missing
// or corrupt one with the files that need it. It fails only when the
// manifest itself cannot be read.
func (r *Repo) Check(ctx context.Context, name string, deep bool) (*CheckReport, error) {
	m, err := r.OpenManifest(ctx, name)
	if err != nil {
		return nil, err
	}
	rep := &CheckReport{Summary: m.Summary(), Metadata: m.Metadata()}
	if err := r.LoadIndex(ctx); err != nil {
		return nil, err
	}
	state := map[ChunkID]int{}  // 0: good; >0: index+1 in Problems
	packs := map[PackID]int64{} // pack sizes seen (-1: missing)
	for {
		e, err := m.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return rep, err
		}
		if e.Type != TypeFile {
			continue
		}
		rep.Files++
		damaged := false
		for _, ref := range e.Chunks {
			idx, seen := state[ref.ID]
			if !seen {
				rep.Chunks++
				if cerr := r.checkChunk(ctx, ref, deep, packs); cerr != nil {
					if ctx.Err() != nil {
						return rep, ctx.Err()
					}
					rep.Problems = append(rep.Problems, ChunkProblem{Chunk: ref, Err: cerr})
					idx = len(rep.Problems)
				}
				state[ref.ID] = idx
			}
			if idx > 0 {
				p := &rep.Problems[idx-1]
				if n := len(p.Paths); n > 0 && p.Paths[n-1] == e.Path {
					continue
				}
				if len(p.Paths) < maxPathsPerProblem {
					p.Paths = append(p.Paths, e.Path)
				} else {
					p.More++
				}
				damaged = true
			}
		}
		if damaged {
			rep.Damaged++
		}
	}
	rep.Complete = len(rep.Problems) == 0
	sort.SliceStable(rep.Problems, func(i, j int) bool { return len(rep.Problems[i].Paths) > len(rep.Problems[j].Paths) })
	return rep, nil
}

// checkChunk checks that chunk ref is stored (deep: and checks out). A
// packed chunk's pack is asked about once (its size in packs).
func (r *Repo) checkChunk(ctx context.Context, ref ChunkRef, deep bool, packs map[PackID]int64) error {
	if deep {
		_, err := r.GetChunk(ctx, ref)
		return err
	}
	if l, ok := r.Locate(ref.ID); ok {
		size, seen := packs[l.Pack]
		if !seen {
			size = -1
			info, err := r.store.Stat(ctx, r.PackKey(l.Pack))
			if err == nil {
				size = info.Size
			} else if !blob.IsNotFound(err) {
				return fmt.Errorf("chunk %s: pack %s: %w", ref.ID, l.Pack, err)
			}
			packs[l.Pack] = size
		}
		if size < 0 {
			return fmt.Errorf("chunk %s: pack %s: %w", ref.ID, l.Pack, blob.NotFound(r.PackKey(l.Pack)))
		}
		if size < l.Offset+l.Length {
			return fmt.Errorf("chunk %s: pack %s ends before it: %w", ref.ID, l.Pack, ErrCorrupt)
		}
		return nil
	}
	if _, err := r.store.Stat(ctx, ref.ID.key()); err != nil {
		return fmt.Errorf("chunk %s: %w", ref.ID, err)
	}
	return nil
}

// Err summarizes the report's problems as one error (nil when complete),
// naming the affected files.
func (c *CheckReport) Err() error {
	if c.Complete {
		return nil
	}
	errs := make([]error, 0, len(c.Problems))
	for _, p := range c.Problems {
		more := ""
		if p.More > 0 {
			more = fmt.Sprintf(" and %d more", p.More)
		}
		errs = append(errs, fmt.Errorf("%w; needed by %q%s", p.Err, p.Paths, more))
	}
	return fmt.Errorf("%d of %d files cannot be restored whole: %w", c.Damaged, c.Files, errors.Join(errs...))
}
