package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/idmap"
	"golang.org/x/sys/unix"
)

// overflowID is the id unmapped ids show as (the kernel's overflowuid).
const overflowID = 65534

// shiftedLayer returns a copy of layer whose ids are shifted into r, making it
// under cacheDir/<range>/ if it does not exist yet (committed by rename).
func shiftedLayer(ctx context.Context, layer string, r idmap.Range, cacheDir string) (string, error) {
	dir := filepath.Join(cacheDir, fmt.Sprintf("%d-%d", r.HostID, r.Size))
	dst := filepath.Join(dir, filepath.Base(layer))
	if _, err := os.Lstat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	// A range belongs to one environment at a time: no concurrent copier.
	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := copyShifted(ctx, layer, tmp, r); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("shift layer %s: %w", layer, err)
	}
	if err := syncDir(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return dst, nil
}

func shiftID(id uint32, r idmap.Range) int {
	if id >= r.Size {
		return overflowID // unmapped inside, and nobody's outside
	}
	return int(r.HostID + id)
}

// copyShifted copies the tree src to dst (which must not exist) keeping
// modes, times, xattrs, devices and hard links, with ids shifted into r.
func copyShifted(ctx context.Context, src, dst string, r idmap.Range) error {
	type dirMeta struct {
		path string
		ts   []unix.Timespec
	}
	var dirs []dirMeta
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
		out := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(out, 0o700); err != nil {
				return err
			}
		case unix.S_IFREG:
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				return os.Link(first, out)
			}
			if err := copyFile(p, out); err != nil {
				return err
			}
			if st.Nlink > 1 {
				links[key] = out
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, out); err != nil {
				return err
			}
		default: // devices (whiteouts), fifos, sockets
			if err := unix.Mknod(out, st.Mode, int(st.Rdev)); err != nil {
				return err
			}
		}
		if err := os.Lchown(out, shiftID(st.Uid, r), shiftID(st.Gid, r)); err != nil {
			return err
		}
		if err := copyXattrs(p, out); err != nil {
			return err
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return unix.UtimesNanoAt(unix.AT_FDCWD, out, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err := unix.Chmod(out, st.Mode&0o7777); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs = append(dirs, dirMeta{out, ts})
			return nil
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, out, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i].path, dirs[i].ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
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

func copyXattrs(src, dst string) error {
	sz, err := unix.Llistxattr(src, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(src, buf)
	if err != nil {
		return err
	}
	for _, name := range splitNul(buf[:sz]) {
		vsz, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			return err
		}
		val := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = unix.Lgetxattr(src, name, val); err != nil {
				return err
			}
		}
		if err := unix.Lsetxattr(dst, name, val[:vsz], 0); err != nil && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("set xattr %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
