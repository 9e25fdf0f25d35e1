package treecopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Options tune Copy. The zero value copies everything with ids unchanged.
type Options struct {
	// MapID maps a uid or gid of src to the one written in dst. Nil keeps
	// ids as they are.
	MapID func(id uint32) uint32
	// Exclude reports whether the entry at rel (a path relative to src as
	// returned by filepath.Rel: "." for src itself, "a/b") is left out,
	// with everything beneath it if it is a directory.
	Exclude func(rel string) bool
	// Xattr decides, for each extended attribute name of the source file
	// path, whether it is copied. An error aborts the copy (refuse files
	// that cannot be copied faithfully). Nil copies every attribute.
	Xattr func(path, name string) (bool, error)
	// TolerateXattrErrors ignores ENOTSUP and EPERM when setting an
	// attribute on the copy (a destination that cannot hold trusted.* or
	// security.* attributes), instead of failing.
	TolerateXattrErrors bool
}

// Copy copies the tree src to dst, which must not exist or be an empty
// directory. Ownership is mapped through opts.MapID and set before modes,
// so set-id bits survive; directory times are set last, deepest first.
// Files sharing an inode in src share one in dst. ctx is checked before
// each entry.
func Copy(ctx context.Context, src, dst string, opts Options) error {
	type dirTimes struct {
		path string
		ts   []unix.Timespec
	}
	var dirs []dirTimes
	links := map[[2]uint64]string{} // dev, ino -> first copy
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if opts.Exclude != nil && opts.Exclude(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		out := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if err := makeEntry(p, out, rel, &st, links); err != nil {
			return err
		}
		uid, gid := st.Uid, st.Gid
		if opts.MapID != nil {
			uid, gid = opts.MapID(uid), opts.MapID(gid)
		}
		if err := os.Lchown(out, int(uid), int(gid)); err != nil {
			return err
		}
		if err := copyXattrs(p, out, opts); err != nil {
			return err
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			// Symlink modes are fixed; times are set on the link itself.
		case unix.S_IFDIR:
			// After chown, which clears set-id bits.
			if err := unix.Chmod(out, st.Mode&0o7777); err != nil {
				return err
			}
			dirs = append(dirs, dirTimes{out, ts})
			return nil
		default:
			if err := unix.Chmod(out, st.Mode&0o7777); err != nil {
				return err
			}
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, out, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		return err
	}
	// Deepest last in walk order: set them in reverse, after every child
	// was created, so that no later write touches a directory's mtime.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i].path, dirs[i].ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return nil
}

// makeEntry creates out as a copy of the entry p described by st, without
// its metadata; a regular file whose inode was copied already becomes a hard
// link to that copy.
func makeEntry(p, out, rel string, st *unix.Stat_t, links map[[2]uint64]string) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		err := os.Mkdir(out, 0o700)
		if err != nil && rel == "." && errors.Is(err, fs.ErrExist) {
			// dst made by the caller: accept it if it is an empty directory.
			return checkEmptyDir(out)
		}
		return err
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[key]; ok {
			return os.Link(first, out) // metadata is the first copy's
		}
		if err := copyFile(p, out); err != nil {
			return err
		}
		if st.Nlink > 1 {
			links[key] = out
		}
		return nil
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return os.Symlink(target, out)
	default: // devices (overlay whiteouts are char 0:0), fifos, sockets
		return unix.Mknod(out, st.Mode, int(st.Rdev))
	}
}

func checkEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	if names, err := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
