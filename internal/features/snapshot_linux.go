package features

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// overflowID is what ids outside the environment's range become.
const overflowID = 65534

// Overlay xattrs that describe the upper directory's relation to the lower
// layers it was mounted over (and the metadata-only copy-up, which would
// leave a file without data): meaningless or wrong in a new layer.
var droppedXattrs = map[string]bool{
	"overlay.origin": true, "overlay.impure": true, "overlay.nlink": true,
	"overlay.upper": true, "overlay.uuid": true, "overlay.protattr": true,
}

// SnapshotLayer copies the overlay upper directory upperDir into a new layer
// directory layerDir, shifting every uid and gid down by shift (the host id
// the environment's root maps to) so the layer holds container ids, like an
// unpacked image layer. Modes, times, xattrs, symlinks, hard links, overlay
// whiteouts (0:0 character devices) and opaque directories
// (trusted.overlay.opaque) are kept. exclude lists container paths ("/tmp",
// "/etc/hosts") skipped with everything beneath them.
//
// The copy is made in a temporary sibling of layerDir and renamed into place:
// layerDir exists only complete. If layerDir already exists, SnapshotLayer
// leaves it as is and returns nil.
func SnapshotLayer(upperDir, layerDir string, shift uint32, exclude []string) error {
	if _, err := os.Lstat(layerDir); err == nil {
		return nil
	}
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[filepath.Clean("/"+e)] = true
	}
	tmp, err := os.MkdirTemp(filepath.Dir(layerDir), filepath.Base(layerDir)+".tmp-")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := copyLayer(upperDir, tmp, shift, skip); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %s: %w", upperDir, err)
	}
	if err := syncTree(tmp); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot sync: %w", err)
	}
	if err := os.Rename(tmp, layerDir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot commit: %w", err)
	}
	if d, err := os.Open(filepath.Dir(layerDir)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func unshift(id, shift uint32) int {
	if id < shift {
		return overflowID
	}
	return int(id - shift)
}

func copyLayer(src, dst string, shift uint32, skip map[string]bool) error {
	type dirTime struct {
		path string
		ts   []unix.Timespec
	}
	var dirs []dirTime
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if skip[filepath.Clean("/"+rel)] {
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
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if rel == "." {
				break // made by the caller
			}
			if err := os.Mkdir(out, 0o700); err != nil {
				return err
			}
		case unix.S_IFREG:
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok {
				return os.Link(first, out) // metadata is the first copy's
			}
			if err := copyRegular(p, out); err != nil {
				return err
			}
			if st.Nlink > 1 {
				links[key] = out
			}
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, out); err != nil {
				return err
			}
		default: // whiteouts (char 0:0), other devices, fifos, sockets
			if err := unix.Mknod(out, st.Mode, int(st.Rdev)); err != nil {
				return err
			}
		}
		if err := os.Lchown(out, unshift(st.Uid, shift), unshift(st.Gid, shift)); err != nil {
			return err
		}
		if err := copyXattrs(p, out); err != nil {
			return err
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			// After chown, which clears set-id bits.
			if err := unix.Chmod(out, st.Mode&0o7777); err != nil {
				return err
			}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs = append(dirs, dirTime{out, ts})
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

func copyRegular(src, dst string) error {
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
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return fmt.Errorf("list xattrs of %s: %w", src, err)
	}
	if sz == 0 {
		return nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(src, buf); err != nil {
		return fmt.Errorf("list xattrs of %s: %w", src, err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		short := strings.TrimPrefix(strings.TrimPrefix(name, "trusted."), "user.")
		if short == "overlay.metacopy" {
			return fmt.Errorf("%s is a metadata-only copy-up (overlay metacopy=on is not supported)", src)
		}
		if droppedXattrs[short] {
			continue
		}
		vsz, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			return fmt.Errorf("get xattr %s of %s: %w", name, src, err)
		}
		val := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = unix.Lgetxattr(src, name, val); err != nil {
				return fmt.Errorf("get xattr %s of %s: %w", name, src, err)
			}
		}
		if err := unix.Lsetxattr(dst, name, val[:vsz], 0); err != nil {
			return fmt.Errorf("set xattr %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

// syncTree flushes the file system holding dir.
func syncTree(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}
