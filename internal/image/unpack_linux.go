package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	paxXattrPrefix = "SCHILY.xattr."
)

// errEscape marks a layer entry that would write outside the layer directory.
var errEscape = errors.New("path escapes the layer root")

// unpack extracts the tar stream r into dir, which must exist and be empty,
// turning OCI whiteouts into overlayfs ones. Ownership is kept as recorded.
// Every path is resolved beneath dir without following symlinks, so an entry
// can neither name a path outside dir nor write through a symlink.
func unpack(ctx context.Context, dir string, r io.Reader) error {
	root, err := os.OpenFile(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer root.Close()
	u := &unpacker{root: int(root.Fd()), rootPath: dir}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	// Directory times last: creating entries inside changed them.
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		if d.rel == "." {
			_ = unix.UtimesNanoAt(u.root, ".", d.ts, 0)
			continue
		}
		pfd, err := u.openDir(path.Dir(d.rel), false)
		if err != nil {
			continue // replaced later in the stream
		}
		_ = unix.UtimesNanoAt(pfd, path.Base(d.rel), d.ts, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(pfd)
	}
	return nil
}

type dirTimes struct {
	rel string
	ts  []unix.Timespec
}

type unpacker struct {
	root     int
	rootPath string
	dirs     []dirTimes
}

// cleanPath validates a tar entry name and returns it relative to the root.
func cleanPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute path: %w", errEscape)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("'..' in path: %w", errEscape)
		}
	}
	return path.Clean(name), nil
}

// openDir opens the directory rel beneath the root, refusing symlinks on the
// way. With create, missing directories are created (mode 0755, root).
func (u *unpacker) openDir(rel string, create bool) (int, error) {
	fd, err := openBeneath(u.root, rel)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	cur, err := unix.Dup(u.root)
	if err != nil {
		return -1, err
	}
	for _, el := range strings.Split(rel, "/") {
		if err := unix.Mkdirat(cur, el, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(cur)
			return -1, err
		}
		next, err := openBeneath(cur, el)
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

func openBeneath(dirfd int, rel string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for range 8 {
		fd, err := unix.Openat2(dirfd, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV):
			return -1, fmt.Errorf("%s goes through a symlink: %w", rel, errEscape)
		case errors.Is(err, unix.ENOTDIR):
			return -1, fmt.Errorf("%s: not a directory", rel)
		default:
			return -1, err
		}
	}
	return -1, fmt.Errorf("open %s: %w", rel, unix.EAGAIN)
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader:
		return nil
	}
	rel, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("layer root must be a directory")
		}
		if err := unix.Fchown(u.root, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		if err := unix.Fchmod(u.root, uint32(hdr.Mode)&0o7777); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirTimes{rel: ".", ts: times(hdr)})
		return nil
	}
	parentRel, base := path.Dir(rel), path.Base(rel)
	pfd, err := u.openDir(parentRel, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)

	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(pfd, parentRel, base, hdr)
	}

	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		keep := hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !keep {
			if err := u.remove(pfd, rel, base, st); err != nil {
				return err
			}
		}
	}

	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	case tar.TypeReg, '\x00':
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), base)
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return err
		}
	case tar.TypeLink:
		return u.hardlink(pfd, base, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, base, typ|mode, int(dev)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}

	// Owner first: chown clears setuid/setgid bits, chmod sets them back.
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := u.setXattrs(rel, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		u.dirs = append(u.dirs, dirTimes{rel: rel, ts: times(hdr)})
		return nil
	}
	if err := unix.UtimesNanoAt(pfd, base, times(hdr), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// whiteout records an OCI whiteout as overlayfs expects it.
func (u *unpacker) whiteout(pfd int, parentRel, base string, hdr *tar.Header) error {
	if base == whiteoutOpaque {
		return unix.Fsetxattr(pfd, opaqueXattr, []byte("y"), 0)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata: nothing to do
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("invalid whiteout")
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, target, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if err := u.remove(pfd, path.Join(parentRel, target), target, st); err != nil {
			return err
		}
	}
	if err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	return unix.Fchownat(pfd, target, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
}

func (u *unpacker) hardlink(pfd int, base, linkname string) error {
	trel, err := cleanPath(linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if trel == "." {
		return fmt.Errorf("hardlink to the layer root")
	}
	tfd, err := u.openDir(path.Dir(trel), false)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	defer unix.Close(tfd)
	if err := unix.Linkat(tfd, path.Base(trel), pfd, base, 0); err != nil {
		return fmt.Errorf("hardlink to %q: %w", linkname, err)
	}
	return nil
}

// remove deletes an existing entry that a later one replaces.
func (u *unpacker) remove(pfd int, rel, base string, st unix.Stat_t) error {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		// The parent was opened without crossing symlinks; RemoveAll does
		// not follow symlinks inside.
		return os.RemoveAll(filepath.Join(u.rootPath, rel))
	}
	return unix.Unlinkat(pfd, base, 0)
}

func (u *unpacker) setXattrs(rel string, hdr *tar.Header) error {
	p := filepath.Join(u.rootPath, rel)
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
				continue // e.g. user.* on a symlink; not worth failing a pull
			}
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

func times(hdr *tar.Header) []unix.Timespec {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return []unix.Timespec{ts(at), ts(hdr.ModTime)}
}

func ts(t time.Time) unix.Timespec {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	return unix.NsecToTimespec(t.UnixNano())
}
