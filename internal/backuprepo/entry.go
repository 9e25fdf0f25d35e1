package backuprepo

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/covedev/cove/internal/errdefs"
)

// EntryType is the kind of a manifest entry.
type EntryType string

// The entry types. An opaque directory (overlayfs "trusted.overlay.opaque")
// is a Dir with Opaque set; a whiteout hides a path of the lower layer.
const (
	TypeFile     EntryType = "file"
	TypeDir      EntryType = "dir"
	TypeSymlink  EntryType = "symlink"
	TypeHardlink EntryType = "hardlink" // Target is the path of the file it links to
	TypeWhiteout EntryType = "whiteout"
)

// Bounds a manifest entry must respect; a reader refuses a manifest that
// exceeds them.
const (
	MaxPathLen      = 4096
	MaxFileSize     = 256 << 30 // 256 GiB: at most 1 Mi chunk references in memory for one file
	MaxXattrs       = 64
	MaxXattrNameLen = 255
	MaxXattrSize    = 64 << 10  // Linux's own limit on one value
	MaxXattrsTotal  = 256 << 10 // all of one entry's names and values
	MaxEntries      = 1 << 28
	MaxTotalSize    = 1 << 46 // 64 TiB in one backup
)

// Entry is one path of a backup. Ownership is as seen inside the
// environment, so a restore maps it into any uid range. Times are Unix
// nanoseconds.
type Entry struct {
	Path   string // relative, clean, "/"-separated; "." for the root directory
	Type   EntryType
	Mode   uint32 // permission bits with setuid, setgid and sticky (07777)
	UID    uint32
	GID    uint32
	Mtime  int64
	Ctime  int64  // files: with Inode and Size, what tells an unchanged file (never restored)
	Inode  uint64 // files: see Ctime
	Size   int64  // files: content length
	Target string // symlink: its target (any bytes); hardlink: the path it links to
	Opaque bool   // dir: hides the lower layer's content
	Xattrs map[string][]byte
	Chunks []ChunkRef // files: the content, in order
}

// Validate checks e against the bounds and rules of a manifest entry:
// what a restore may trust about it.
func (e *Entry) Validate() error {
	if err := validPath(e.Path, e.Type == TypeDir); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return errdefs.InvalidArgument(fmt.Errorf("manifest entry %q: "+format, append([]any{e.Path}, args...)...))
	}
	if e.Mode&^07777 != 0 {
		return bad("mode %o has bits outside 07777", e.Mode)
	}
	switch e.Type {
	case TypeFile, TypeDir, TypeSymlink, TypeHardlink, TypeWhiteout:
	default:
		return bad("unknown type %.20q", e.Type)
	}
	if e.Type != TypeFile && (e.Size != 0 || len(e.Chunks) != 0) {
		return bad("a %s has no content", e.Type)
	}
	if e.Opaque && e.Type != TypeDir {
		return bad("only a directory can be opaque")
	}
	switch e.Type {
	case TypeSymlink:
		if e.Target == "" || len(e.Target) > MaxPathLen || strings.IndexByte(e.Target, 0) >= 0 {
			return bad("symlink target must be 1 to %d bytes without NUL", MaxPathLen)
		}
	case TypeHardlink:
		if err := validPath(e.Target, false); err != nil {
			return bad("hard link target: %v", err)
		}
		if e.Target == e.Path {
			return bad("hard link to itself")
		}
	default:
		if e.Target != "" {
			return bad("a %s has no target", e.Type)
		}
	}
	if e.Type == TypeFile {
		if e.Size < 0 || e.Size > MaxFileSize {
			return bad("size %d out of range 0 to %d", e.Size, int64(MaxFileSize))
		}
		if max := e.Size/MinChunkSize + 1; int64(len(e.Chunks)) > max {
			return bad("%d chunks for %d bytes (at most %d)", len(e.Chunks), e.Size, max)
		}
		var sum int64
		for _, c := range e.Chunks {
			if c.Size == 0 || c.Size > MaxChunkSize {
				return bad("chunk %s of size %d", c.ID, c.Size)
			}
			sum += int64(c.Size)
		}
		if sum != e.Size {
			return bad("chunks add up to %d bytes, size is %d", sum, e.Size)
		}
	}
	return validXattrs(e)
}

func validXattrs(e *Entry) error {
	if len(e.Xattrs) > MaxXattrs {
		return errdefs.InvalidArgument(fmt.Errorf("manifest entry %q: %d extended attributes, at most %d", e.Path, len(e.Xattrs), MaxXattrs))
	}
	total := 0
	for name, v := range e.Xattrs {
		if name == "" || len(name) > MaxXattrNameLen || !utf8.ValidString(name) || strings.IndexByte(name, 0) >= 0 {
			return errdefs.InvalidArgument(fmt.Errorf("manifest entry %q: extended attribute name %.40q invalid", e.Path, name))
		}
		if len(v) > MaxXattrSize {
			return errdefs.InvalidArgument(fmt.Errorf("manifest entry %q: extended attribute %q of %d bytes, at most %d", e.Path, name, len(v), MaxXattrSize))
		}
		total += len(name) + len(v)
	}
	if total > MaxXattrsTotal {
		return errdefs.InvalidArgument(fmt.Errorf("manifest entry %q: extended attributes of %d bytes in all, at most %d", e.Path, total, MaxXattrsTotal))
	}
	return nil
}

// validPath checks that p is a relative, clean path inside the backup's
// root: no "..", not absolute, no empty or "." element, no NUL. "." (the
// root itself) is allowed only when root is true.
func validPath(p string, root bool) error {
	bad := func(why string) error {
		return errdefs.InvalidArgument(fmt.Errorf("manifest path %.100q: %s", p, why))
	}
	switch {
	case p == "":
		return bad("empty")
	case len(p) > MaxPathLen:
		return bad(fmt.Sprintf("%d bytes, more than %d", len(p), MaxPathLen))
	case strings.IndexByte(p, 0) >= 0:
		return bad("contains NUL")
	case p == ".":
		if !root {
			return bad("the root is a directory")
		}
		return nil
	case strings.HasPrefix(p, "/"):
		return bad("absolute")
	case p == ".." || strings.HasPrefix(p, "../"):
		return bad("escapes the root")
	case path.Clean(p) != p:
		return bad("not clean (\"..\", \".\", double or trailing \"/\")")
	}
	return nil
}

// ComparePaths orders backup paths as Writer.Add wants them (see
// comparePaths): a walker sorts its trees with it.
func ComparePaths(a, b string) int { return comparePaths(a, b) }

// ValidPath checks that p is a path a manifest entry may have (relative,
// clean, no "..", no NUL, at most MaxPathLen bytes); "." is refused.
func ValidPath(p string) error { return validPath(p, false) }

// comparePaths orders paths as a depth-first walk visiting children in
// byte order: "." first, then component by component ("a" < "a/b" <
// "a-c"). Manifest entries are strictly increasing in this order, which
// excludes duplicates and lets an incremental backup walk the previous
// manifest alongside the tree.
func comparePaths(a, b string) int {
	if a == b {
		return 0
	}
	if a == "." {
		return -1
	}
	if b == "." {
		return 1
	}
	for {
		ah, at, amore := strings.Cut(a, "/")
		bh, bt, bmore := strings.Cut(b, "/")
		if c := strings.Compare(ah, bh); c != 0 {
			return c
		}
		switch {
		case !amore && !bmore:
			return 0
		case !amore:
			return -1
		case !bmore:
			return 1
		}
		a, b = at, bt
	}
}
