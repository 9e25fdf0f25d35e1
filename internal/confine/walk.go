package confine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"
)

// MaxDepth bounds how deep Walk descends: a hostile tree can be nested far
// deeper than anything real, and each level holds a descriptor.
const MaxDepth = 1024

// SkipDir, returned by a visit function for a directory, skips its
// contents (and its leave call).
var SkipDir = errors.New("skip this directory")

// Entry is one entry of a walked tree. Its methods work through the
// descriptor of the directory holding it, so they read exactly the entry
// that was listed there, never something a path now leads to.
type Entry struct {
	// Rel is the path below the walked directory: "." for the directory
	// itself, else "a/b".
	Rel string
	// Stat describes the entry itself (a symlink is not followed).
	Stat unix.Stat_t
	// Depth is 0 for the walked directory, 1 for its children...
	Depth int

	parent int    // descriptor of the directory holding the entry
	name   string // its name there ("." for the walked directory)
	fd     int    // for directories: their own descriptor while walked
}

// Type is the entry's file type bits (unix.S_IFREG, S_IFDIR...).
func (e *Entry) Type() uint32 { return e.Stat.Mode & unix.S_IFMT }

// Open opens a regular file entry for reading. It fails if the name no
// longer leads to the inode that was listed. Reading it does not update
// its access time (O_NOATIME, as tar --atime-preserve=system), where the
// caller may ask that (the file's owner, or CAP_FOWNER: a backup reading
// an environment's files leaves them as they were, and does not make the
// file system write an inode per file read).
func (e *Entry) Open() (*os.File, error) {
	if e.Type() != unix.S_IFREG {
		return nil, fmt.Errorf("%s: not a regular file", e.Rel)
	}
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	fd, err := retry(func() (int, error) {
		fd, err := unix.Openat(e.parent, e.name, flags|unix.O_NOATIME, 0)
		if err == unix.EPERM {
			fd, err = unix.Openat(e.parent, e.name, flags, 0)
		}
		return fd, err
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: e.Rel, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: e.Rel, Err: err}
	}
	if st.Dev != e.Stat.Dev || st.Ino != e.Stat.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: e.Rel, Err: errors.New("replaced while being read")}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), e.Rel), nil
}

// Readlink returns a symlink entry's target.
func (e *Entry) Readlink() (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(e.parent, e.name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: e.Rel, Err: err}
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= 1<<16 {
			return "", &os.PathError{Op: "readlink", Path: e.Rel, Err: unix.ENAMETOOLONG}
		}
		buf = make([]byte, 2*len(buf))
	}
}

// xattrTarget is how the entry's extended attributes are reached: a
// directory through its own descriptor, anything else by its name in its
// parent's descriptor (the l* calls have no *at form; the magic link is the
// directory itself and the final name is not followed).
func (e *Entry) xattrTarget() xattrTarget {
	if e.fd >= 0 {
		return xattrTarget{fd: e.fd}
	}
	return xattrTarget{fd: -1, path: fmt.Sprintf("/proc/self/fd/%d/%s", e.parent, e.name)}
}

// Xattrs lists the entry's extended attributes with their values.
func (e *Entry) Xattrs() (map[string][]byte, error) {
	t := e.xattrTarget()
	names, err := t.list()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Rel, err)
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		v, err := t.get(n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Rel, err)
		}
		out[n] = v
	}
	return out, nil
}

// XattrNames lists the names of the entry's extended attributes (none
// where the filesystem has none), without reading any value.
func (e *Entry) XattrNames() ([]string, error) {
	names, err := e.xattrTarget().list()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Rel, err)
	}
	return names, nil
}

// Xattr reads one extended attribute's value if it is at most max bytes
// (unix.E2BIG otherwise, nothing allocated for it). An attribute removed
// since it was listed is unix.ENODATA.
func (e *Entry) Xattr(name string, max int) ([]byte, error) {
	v, err := e.xattrTarget().getMax(name, max)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Rel, err)
	}
	return v, nil
}

// Walk calls visit for dir itself and every entry below it, parents before
// children, each directory's entries in name order; leave, if not nil, is
// called for a directory after its contents. Symlinks are reported, never
// followed; nothing is resolved by path, so a tree changing underneath can
// make Walk fail but never leads it out of dir. ctx is checked before each
// entry.
func Walk(ctx context.Context, dir *Dir, visit, leave func(*Entry) error) error {
	fd, err := retry(func() (int, error) {
		return unix.Openat(dir.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return &os.PathError{Op: "open", Path: dir.name, Err: err}
	}
	defer unix.Close(fd)
	root := &Entry{Rel: ".", parent: fd, name: ".", fd: fd}
	if err := unix.Fstat(fd, &root.Stat); err != nil {
		return err
	}
	w := walker{ctx: ctx, visit: visit, leave: leave}
	return w.dir(root)
}

type walker struct {
	ctx          context.Context
	visit, leave func(*Entry) error
}

func (w *walker) dir(e *Entry) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.visit(e); err != nil {
		if errors.Is(err, SkipDir) {
			return nil
		}
		return err
	}
	names, err := readNames(e.fd)
	if err != nil {
		return &os.PathError{Op: "readdir", Path: e.Rel, Err: err}
	}
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		c := &Entry{Rel: path.Join(e.Rel, name), Depth: e.Depth + 1, parent: e.fd, name: name, fd: -1}
		if err := unix.Fstatat(e.fd, name, &c.Stat, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed since listed
			}
			return &os.PathError{Op: "lstat", Path: c.Rel, Err: err}
		}
		if c.Type() != unix.S_IFDIR {
			if err := w.visit(c); err != nil && !errors.Is(err, SkipDir) {
				return err
			}
			continue
		}
		if c.Depth > MaxDepth {
			return fmt.Errorf("%s: directories nested deeper than %d", c.Rel, MaxDepth)
		}
		if err := w.child(c); err != nil {
			return err
		}
	}
	if w.leave != nil {
		return w.leave(e)
	}
	return nil
}

// child opens directory entry c (it must still be the directory that was
// listed) and walks it.
func (w *walker) child(c *Entry) error {
	fd, err := retry(func() (int, error) {
		return unix.Openat(c.parent, c.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return &os.PathError{Op: "open", Path: c.Rel, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Dev != c.Stat.Dev || st.Ino != c.Stat.Ino {
		return &os.PathError{Op: "open", Path: c.Rel, Err: errors.New("replaced while being read")}
	}
	c.fd = fd
	return w.dir(c)
}

// readNames lists a directory's entry names, sorted.
func readNames(fd int) ([]string, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}
