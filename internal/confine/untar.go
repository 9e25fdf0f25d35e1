package confine

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteouts and their overlayfs form.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	paxXattrPrefix = "SCHILY.xattr."
)

// UnpackOptions say what a tar stream may create.
type UnpackOptions struct {
	// Whiteouts turns OCI whiteouts (.wh.NAME, .wh..wh..opq) into
	// overlayfs ones (0:0 character devices, the opaque xattr), as image
	// layers need; without it they are ordinary names.
	Whiteouts bool
	// Owners keeps the recorded uid and gid; without it everything is
	// owned by the unpacking process and set-id bits are dropped.
	Owners bool
	// Devices allows device nodes and fifos; without it they are skipped.
	Devices bool
	// Xattrs keeps PAX extended attributes.
	Xattrs bool
	// MaxBytes bounds the total size of regular files (0: no bound).
	MaxBytes int64
}

// Unpack extracts the tar stream r into the directory dir (its contents are
// replaced entry by entry, as layers stack). Every entry is created through
// the descriptor of its parent directory, which is resolved below dir
// without following any symlink: an entry can neither name a path outside
// dir nor write, chmod or chown through a symlink (an existing symlink
// where a directory entry comes is replaced, never followed). Hard links
// must name an earlier entry inside dir.
func Unpack(ctx context.Context, dir *Dir, r io.Reader, opts UnpackOptions) error {
	rootFD, err := unix.Openat(dir.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFD)
	u := &unpacker{root: rootFD, opts: opts}
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
	root  int
	opts  UnpackOptions
	dirs  []dirTimes
	total int64
}

// entryPath validates a tar entry name and returns it relative to the root.
func entryPath(name string) (string, error) {
	name = strings.TrimPrefix(name, "./")
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute path: %w", ErrEscape)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("'..' in path: %w", ErrEscape)
		}
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("NUL in path")
	}
	return path.Clean(name), nil
}

// openDir opens the directory rel beneath the root, refusing symlinks on the
// way. With create, missing directories are created (mode 0755).
func (u *unpacker) openDir(rel string, create bool) (int, error) {
	fd, err := openBeneath(u.root, rel)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	cur, err := unix.FcntlInt(uintptr(u.root), unix.F_DUPFD_CLOEXEC, 0)
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
		Resolve: Beneath.flags(),
	}
	fd, err := retry(func() (int, error) { return unix.Openat2(dirfd, rel, &how) })
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV):
		return -1, fmt.Errorf("%s goes through a symlink: %w", rel, ErrEscape)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("%s: not a directory", rel)
	}
	return -1, err
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader:
		return nil
	}
	rel, err := entryPath(hdr.Name)
	if err != nil {
		return err
	}
	mode := uint32(hdr.Mode) & 0o7777
	if !u.opts.Owners {
		mode &^= unix.S_ISUID | unix.S_ISGID
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the root must be a directory")
		}
		if u.opts.Owners {
			if err := unix.Fchown(u.root, hdr.Uid, hdr.Gid); err != nil {
				return err
			}
		}
		if err := unix.Fchmod(u.root, mode); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirTimes{rel: ".", ts: times(hdr)})
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if !u.opts.Devices {
			return nil
		}
	case tar.TypeReg, '\x00':
		u.total += hdr.Size
		if u.opts.MaxBytes > 0 && u.total > u.opts.MaxBytes {
			return fmt.Errorf("content larger than %d bytes", u.opts.MaxBytes)
		}
	}
	parentRel, base := path.Dir(rel), path.Base(rel)
	pfd, err := u.openDir(parentRel, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)

	if u.opts.Whiteouts && strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(pfd, base, hdr)
	}

	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		keep := hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !keep {
			if err := removeAt(pfd, base); err != nil {
				return err
			}
		}
	}

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
		_, err = writeSparse(f, r) // a sparse entry's holes cost no disk
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
	return u.meta(pfd, rel, base, hdr, mode)
}

// meta sets the owner, extended attributes, mode and times of the entry
// just created as base in pfd (it is not a symlink unless the entry is).
func (u *unpacker) meta(pfd int, rel, base string, hdr *tar.Header, mode uint32) error {
	// Owner first: chown clears setuid/setgid bits, chmod sets them back.
	if u.opts.Owners {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if u.opts.Xattrs {
		if err := setXattrs(xattrTarget{fd: -1, path: fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)}, hdr); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// base was created (or kept as a directory) by this unpack just
		// now, through pfd: it is not a symlink.
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
func (u *unpacker) whiteout(pfd int, base string, hdr *tar.Header) error {
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
		if err := removeAt(pfd, target); err != nil {
			return err
		}
	}
	if err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	if !u.opts.Owners {
		return nil
	}
	return unix.Fchownat(pfd, target, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
}

func (u *unpacker) hardlink(pfd int, base, linkname string) error {
	trel, err := entryPath(linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if trel == "." {
		return fmt.Errorf("hardlink to the root")
	}
	tfd, err := u.openDir(path.Dir(trel), false)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, path.Base(trel), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hardlink to %q: %w", linkname, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hardlink to directory %q", linkname)
	}
	// Flags 0: a symlink target is linked itself, never followed.
	if err := unix.Linkat(tfd, path.Base(trel), pfd, base, 0); err != nil {
		return fmt.Errorf("hardlink to %q: %w", linkname, err)
	}
	return nil
}

// removeAt deletes name in the directory pfd, with everything below it if it
// is a directory, without following symlinks.
func removeAt(pfd int, name string) error {
	err := unix.Unlinkat(pfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
}

func setXattrs(t xattrTarget, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if err := t.set(name, []byte(v)); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
				continue // e.g. user.* on a symlink; not worth failing
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
