package confine

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// CopyOptions tune CopyTree. The zero value copies everything with ids
// unchanged.
type CopyOptions struct {
	// MapID maps a uid or gid of the source to the one written in the
	// copy. Nil keeps ids as they are.
	MapID func(id uint32) uint32
	// Exclude reports whether the entry at rel ("." for the source itself,
	// "a/b") is left out, with everything beneath it if it is a directory.
	Exclude func(rel string) bool
	// Xattr decides, for each extended attribute of the entry at rel,
	// whether it is copied. An error aborts the copy (refuse files that
	// cannot be copied faithfully). Nil copies every attribute.
	Xattr func(rel, name string) (bool, error)
	// TolerateXattrErrors ignores ENOTSUP and EPERM when setting an
	// attribute on the copy (a destination that cannot hold trusted.* or
	// security.* attributes), instead of failing.
	TolerateXattrErrors bool
	// Types, if not zero, lists the file types copied (bits of
	// unix.S_IFREG, S_IFDIR...: use TypeMask); other entries are skipped.
	Types TypeMask
	// NoOwners leaves the copy owned by the copying process (root), modes
	// without set-id bits.
	NoOwners bool
	// Owner, if set, owns everything in the copy (set-id bits dropped),
	// whatever the source's owners.
	Owner *Owner
}

// Owner is a uid and gid.
type Owner struct{ UID, GID uint32 }

// TypeMask is a set of file types.
type TypeMask uint16

// File type sets for CopyOptions.Types.
const (
	Regular TypeMask = 1 << iota
	Directory
	Symlink
	Special // devices (overlay whiteouts are 0:0 character devices), fifos, sockets
)

func typeOf(mode uint32) TypeMask {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return Regular
	case unix.S_IFDIR:
		return Directory
	case unix.S_IFLNK:
		return Symlink
	}
	return Special
}

// CopyTree copies the tree of src to dst, a path the caller trusts that
// must not exist or be an empty directory. The source is read through
// Walk: a tree changed underneath (a directory swapped for a symlink) makes
// the copy fail or copies the link as a link, and never reads outside src.
// Regular files, directories, symlinks, hard links (within the tree),
// devices, fifos, sockets, extended attributes, modes (set-id bits
// included) and times are kept, ownership mapped through opts.MapID.
func CopyTree(ctx context.Context, src *Dir, dst string, opts CopyOptions) error {
	if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	dstDir, err := OpenDir(dst)
	if err != nil {
		return err
	}
	defer dstDir.Close()
	rootFD, err := unix.Openat(dstDir.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if names, err := readNames(rootFD); err != nil || len(names) > 0 {
		unix.Close(rootFD)
		if err == nil {
			err = fmt.Errorf("%s is not empty", dst)
		}
		return err
	}
	c := &copier{opts: opts, links: map[[2]uint64]string{}, dstRoot: rootFD}
	c.stack = []int{rootFD}
	defer func() {
		for _, fd := range c.stack {
			unix.Close(fd)
		}
	}()
	return Walk(ctx, src, c.visit, c.leave)
}

type copier struct {
	opts    CopyOptions
	links   map[[2]uint64]string // dev, ino of the source -> first copy's rel
	dstRoot int
	stack   []int // descriptors of the destination directories being filled
}

func (c *copier) visit(e *Entry) error {
	if c.opts.Exclude != nil && c.opts.Exclude(e.Rel) {
		return SkipDir
	}
	if e.Rel != "." && c.opts.Types != 0 && c.opts.Types&typeOf(e.Stat.Mode) == 0 {
		return SkipDir
	}
	if e.Rel == "." {
		if e.Type() != unix.S_IFDIR {
			return fmt.Errorf("source is not a directory")
		}
		return c.meta(e, c.dstRoot, ".")
	}
	parent := c.stack[len(c.stack)-1]
	switch e.Type() {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(parent, e.name, 0o700); err != nil {
			return fmt.Errorf("%s: %w", e.Rel, err)
		}
		fd, err := unix.Openat(parent, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := c.meta(e, fd, "."); err != nil {
			unix.Close(fd)
			return err
		}
		c.stack = append(c.stack, fd)
		return nil
	case unix.S_IFREG:
		key := [2]uint64{e.Stat.Dev, e.Stat.Ino}
		if first, ok := c.links[key]; ok {
			// Metadata is the first copy's.
			return unix.Linkat(c.dstRoot, first, parent, e.name, 0)
		}
		if err := c.file(e, parent); err != nil {
			return fmt.Errorf("%s: %w", e.Rel, err)
		}
		if e.Stat.Nlink > 1 {
			c.links[key] = e.Rel
		}
	case unix.S_IFLNK:
		target, err := e.Readlink()
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, parent, e.name); err != nil {
			return fmt.Errorf("%s: %w", e.Rel, err)
		}
	default:
		if err := unix.Mknodat(parent, e.name, e.Stat.Mode, int(e.Stat.Rdev)); err != nil {
			return fmt.Errorf("%s: %w", e.Rel, err)
		}
	}
	return c.metaAt(e, parent)
}

// leave sets a directory's times once its contents are written, then closes
// it.
func (c *copier) leave(e *Entry) error {
	if e.Rel == "." {
		return unix.UtimesNanoAt(c.dstRoot, ".", []unix.Timespec{e.Stat.Atim, e.Stat.Mtim}, 0)
	}
	fd := c.stack[len(c.stack)-1]
	c.stack = c.stack[:len(c.stack)-1]
	defer unix.Close(fd)
	return unix.UtimesNanoAt(fd, ".", []unix.Timespec{e.Stat.Atim, e.Stat.Mtim}, 0)
}

func (c *copier) file(e *Entry, parent int) error {
	in, err := e.Open()
	if err != nil {
		return err
	}
	defer in.Close()
	fd, err := unix.Openat(parent, e.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	out := os.NewFile(uintptr(fd), e.Rel)
	if err := copySparse(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// meta sets the owner, extended attributes and mode of the directory open
// as fd (rel "." of it).
func (c *copier) meta(e *Entry, fd int, _ string) error {
	uid, gid := c.ids(e)
	if !c.opts.NoOwners {
		if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
			return fmt.Errorf("%s: chown: %w", e.Rel, err)
		}
	}
	if err := c.xattrs(e, xattrTarget{fd: fd}); err != nil {
		return err
	}
	// After chown, which clears set-id bits.
	return unix.Fchmod(fd, c.mode(e))
}

// metaAt sets the metadata of the non-directory entry just created as
// e.name in parent.
func (c *copier) metaAt(e *Entry, parent int) error {
	if !c.opts.NoOwners {
		uid, gid := c.ids(e)
		if err := unix.Fchownat(parent, e.name, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: chown: %w", e.Rel, err)
		}
	}
	if err := c.xattrs(e, xattrTarget{fd: -1, path: fmt.Sprintf("/proc/self/fd/%d/%s", parent, e.name)}); err != nil {
		return err
	}
	ts := []unix.Timespec{e.Stat.Atim, e.Stat.Mtim}
	if e.Type() != unix.S_IFLNK { // symlink modes are fixed
		// The copy is ours alone and not a symlink: fchmodat is safe.
		if err := unix.Fchmodat(parent, e.name, c.mode(e), 0); err != nil {
			return fmt.Errorf("%s: chmod: %w", e.Rel, err)
		}
	}
	return unix.UtimesNanoAt(parent, e.name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func (c *copier) ids(e *Entry) (uint32, uint32) {
	if o := c.opts.Owner; o != nil {
		return o.UID, o.GID
	}
	uid, gid := e.Stat.Uid, e.Stat.Gid
	if c.opts.MapID != nil {
		uid, gid = c.opts.MapID(uid), c.opts.MapID(gid)
	}
	return uid, gid
}

func (c *copier) mode(e *Entry) uint32 {
	m := e.Stat.Mode & 0o7777
	if c.opts.NoOwners || c.opts.Owner != nil {
		m &^= unix.S_ISUID | unix.S_ISGID
	}
	return m
}

// xattrs copies the attributes of e that opts.Xattr accepts onto dst.
func (c *copier) xattrs(e *Entry, dst xattrTarget) error {
	src := e.xattrTarget()
	names, err := src.list()
	if err != nil {
		return fmt.Errorf("%s: %w", e.Rel, err)
	}
	for _, name := range names {
		if c.opts.Xattr != nil {
			keep, err := c.opts.Xattr(e.Rel, name)
			if err != nil {
				return err
			}
			if !keep {
				continue
			}
		}
		val, err := src.get(name)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Rel, err)
		}
		if err := dst.set(name, val); err != nil {
			if c.opts.TolerateXattrErrors && (errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM)) {
				continue
			}
			return fmt.Errorf("%s: set xattr %s: %w", e.Rel, name, err)
		}
	}
	return nil
}
