package localblob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"path"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/blob"
)

// List implements blob.Store. It walks the directory of the prefix depth
// first, each directory's entries sorted with a "/" after a directory's
// name: that is the lexicographic order of the keys. Only regular files
// with valid keys are objects; symlinks, temporary files and anything else
// found in the directory are skipped. Memory holds one directory listing
// per level, not the whole result.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		if err := blob.ValidatePrefix(prefix); err != nil {
			yield(blob.Info{}, err)
			return
		}
		start := "."
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			start = prefix[:i]
		}
		if start != "." {
			info, err := s.root.Lstat(start)
			if err != nil || !info.IsDir() {
				return // no such directory: nothing under the prefix
			}
		}
		s.walk(ctx, start, prefix, yield)
	}
}

type entry struct {
	name string // with a trailing "/" for a directory
	d    fs.DirEntry
}

// walk yields the objects under dir whose keys start with prefix; it
// returns false when iteration stops.
func (s *Store) walk(ctx context.Context, dir, prefix string, yield func(blob.Info, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(blob.Info{}, fmt.Errorf("blob list %q: %w", prefix, err))
		return false
	}
	des, err := fs.ReadDir(s.root.FS(), dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return true // removed meanwhile
		}
		yield(blob.Info{}, classify(fmt.Errorf("blob list %q: %w", prefix, err)))
		return false
	}
	entries := make([]entry, 0, len(des))
	for _, d := range des {
		name := d.Name()
		if d.IsDir() {
			name += "/"
		} else if !d.Type().IsRegular() {
			continue
		}
		entries = append(entries, entry{name: name, d: d})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	for _, e := range entries {
		key := path.Join(dir, e.d.Name())
		if blob.ValidateKey(key) != nil {
			continue // .tmp, or not ours
		}
		if e.d.IsDir() {
			sub := key + "/"
			if !strings.HasPrefix(sub, prefix) && !strings.HasPrefix(prefix, sub) {
				continue
			}
			if !s.walk(ctx, key, prefix, yield) {
				return false
			}
			continue
		}
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		info, err := e.d.Info()
		if err != nil {
			continue // deleted meanwhile
		}
		if !yield(blob.Info{Key: key, Size: info.Size(), ModTime: info.ModTime()}, nil) {
			return false
		}
	}
	return true
}
