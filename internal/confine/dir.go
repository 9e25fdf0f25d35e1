package confine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrEscape marks a path that would leave its directory: through a symlink
// (Beneath), "..", an absolute path, or a mount crossing.
var ErrEscape = errors.New("path leaves its directory")

// ErrNotRegular marks a file Open refuses: neither a regular file nor a
// directory (a FIFO, a socket, a device).
var ErrNotRegular = errors.New("not a regular file")

// Resolve is how a relative path is resolved below a Dir.
type Resolve int

const (
	// Beneath refuses symlinks and mount crossings anywhere on the path.
	Beneath Resolve = iota
	// InRoot follows symlinks as if the directory were "/": nothing can
	// lead out of it. Magic links (/proc/self/fd/...) are refused.
	InRoot
)

func (r Resolve) flags() uint64 {
	if r == InRoot {
		return unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV
	}
	return unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV
}

// Dir is an open directory. Its zero value is not usable; Close it when
// done.
type Dir struct {
	fd   int
	name string // for messages only
}

// OpenDir opens the directory at path, which the caller trusts: every
// component of it is laid out by cove in directories only root can write
// (an environment's host directory, its workspace directory). The last
// component must not be a symlink.
func OpenDir(path string) (*Dir, error) {
	fd, err := retry(func() (int, error) {
		return unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &Dir{fd: fd, name: path}, nil
}

// Close closes the directory.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Fd is the directory's descriptor (an O_PATH descriptor, valid until
// Close).
func (d *Dir) Fd() int { return d.fd }

// Name is the path the directory was opened by, for messages.
func (d *Dir) Name() string { return d.name }

// Clean checks rel (slash-separated, relative; a leading "/" is taken as
// relative to the directory) and returns it cleaned; "." is the directory
// itself.
func Clean(rel string) (string, error) {
	rel = strings.TrimLeft(rel, "/")
	if strings.IndexByte(rel, 0) >= 0 {
		return "", fmt.Errorf("%q: NUL in path", rel)
	}
	c := path.Clean("/" + rel)[1:]
	if c == "" {
		c = "."
	}
	return c, nil
}

// open resolves rel below d with openat2.
func (d *Dir) open(rel string, flags int, mode uint32, how Resolve) (int, error) {
	c, err := Clean(rel)
	if err != nil {
		return -1, err
	}
	oh := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: how.flags()}
	fd, err := retry(func() (int, error) { return unix.Openat2(d.fd, c, &oh) })
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
			err = fmt.Errorf("%w (%v)", ErrEscape, err)
		}
		return -1, &os.PathError{Op: "open", Path: path.Join(d.name, c), Err: err}
	}
	return fd, nil
}

// OpenDir opens the directory rel below d.
func (d *Dir) OpenDir(rel string, how Resolve) (*Dir, error) {
	fd, err := d.open(rel, unix.O_PATH|unix.O_DIRECTORY, 0, how)
	if err != nil {
		return nil, err
	}
	c, _ := Clean(rel)
	return &Dir{fd: fd, name: path.Join(d.name, c)}, nil
}

// OpenPath opens rel below d whatever its type (an O_PATH descriptor, for
// Stage and Stat; nothing is read through it).
func (d *Dir) OpenPath(rel string, how Resolve) (*Dir, error) {
	fd, err := d.open(rel, unix.O_PATH, 0, how)
	if err != nil {
		return nil, err
	}
	c, _ := Clean(rel)
	return &Dir{fd: fd, name: path.Join(d.name, c)}, nil
}

// Open opens the file rel below d for reading. It never blocks on a FIFO
// and never opens a device: only regular files and directories.
func (d *Dir) Open(rel string, how Resolve) (*os.File, error) {
	fd, err := d.open(rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0, how)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	c, _ := Clean(rel)
	name := path.Join(d.name, c)
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: name, Err: ErrNotRegular}
	}
	// Reads of a regular file never block; clear O_NONBLOCK for os.File.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// ReadFile reads the regular file rel below d, at most limit bytes (a
// longer file is an error).
func (d *Dir) ReadFile(rel string, limit int64, how Resolve) ([]byte, error) {
	f, err := d.Open(rel, how)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &os.PathError{Op: "read", Path: f.Name(), Err: errors.New("not a regular file")}
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &os.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("larger than %d bytes", limit)}
	}
	return b, nil
}

// Stat describes rel below d without following a final symlink (with
// Beneath no symlink is followed anywhere).
func (d *Dir) Stat(rel string, how Resolve) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := d.open(rel, unix.O_PATH|unix.O_NOFOLLOW, 0, how)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// Root returns an os.Root on d, for code that reads through io/fs (an
// os.Root follows symlinks only while they stay inside it).
func (d *Dir) Root() (*os.Root, error) {
	fd, err := d.open(".", unix.O_RDONLY|unix.O_DIRECTORY, 0, Beneath)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// The magic link names exactly this directory, whatever happens to
	// the path d was opened by.
	r, err := os.OpenRoot(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d.name, err)
	}
	return r, nil
}

// retry repeats a call interrupted by a signal, or by a rename racing an
// openat2 resolution (EAGAIN).
func retry(f func() (int, error)) (int, error) {
	for range 16 {
		fd, err := f()
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return fd, err
	}
	return f()
}
